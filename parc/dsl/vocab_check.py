"""What `vocab_parallel AXIS` needs of the rest of the plan (the model's side, an embedding
and an output layer found in the graph, is checked when the plan is made)."""

from __future__ import annotations

PIPELINE_AXIS = "pp"
# the families whose posting order the vocabulary passes are placed in (schedules/vocab.py)
VOCAB_FAMILIES = ("1f1b", "gpipe")


def vocab_conflict(axis: str, mesh, schedule: str, recompute: tuple[str, ...],
                   sequence: str | None) -> tuple[str, str] | None:
    """(why, help) when `vocab_parallel AXIS` cannot be planned with these settings."""
    sizes = dict(mesh)
    if axis != PIPELINE_AXIS:
        return (f"the vocabulary is split over the pipeline ranks, not over `{axis}`",
                "write `vocab_parallel pp`; a tensor-parallel vocabulary is an `sbp` rule "
                "(the token table `S(0)@tp`)")
    if sizes.get(PIPELINE_AXIS, 1) < 2:
        return ("the mesh has no pipeline (`pp` of size 2 or more)",
                "add a `pp` axis to the mesh, or leave out `vocab_parallel`")
    if schedule not in VOCAB_FAMILIES:
        return (f"its passes are placed in 1F1B and GPipe orders only, not `schedule "
                f"{schedule}`", "use `schedule 1f1b` or `schedule gpipe`")
    if recompute:
        return ("recomputation with a split vocabulary is not supported",
                "leave out `recompute`")
    if sequence is not None:
        return ("sequence parallelism with a split vocabulary is not supported",
                "leave out `sequence_parallel`")
    return None
