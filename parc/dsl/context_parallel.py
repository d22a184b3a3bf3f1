"""Checks `context_parallel AXIS`: what the ring-attention plan needs of the mesh and model."""

from __future__ import annotations

from ..ops.sbp import NdSbp

PIPELINE_AXIS = "pp"


def check_context_axis(checker, axis: str, mesh, sbp: dict[str, NdSbp] | None,
                       sequence: str | None, span) -> None:
    """A mesh axis other than the pipeline's, without sequence parallelism; the model inputs
    and parameters whole on it (parc slices the inputs in the load-balanced layout); a
    sequence that cuts into 2 x AXIS chunks.
    `compile` is refused with the other conflicts of compiled stages (`compile_conflict`)."""
    axes = [a for a, _ in mesh if a != PIPELINE_AXIS]
    where = f"`context_parallel {axis}`: "
    if axis not in axes:
        checker.fail("E353", where + ("the pipeline axis splits no tensor" if axis ==
                     PIPELINE_AXIS else f"the mesh has no axis `{axis}`"), span,
                     help=f"name another axis: {', '.join(axes)}" if axes else
                     "add an axis for it to the mesh, e.g. `mesh (cp = 2)`")
        return
    if sequence is not None:
        checker.fail("E353", where + f"does not combine with `sequence_parallel {sequence}`: "
                     "both would split the sequence", span,
                     help="use one of the two")
        return
    size = dict(mesh)[axis]
    for name, entry in (sbp or {}).items():
        if entry.on(axis).kind != "B":
            checker.fail("E353", where + f"`{name}` is {entry.on(axis)}@{axis}; inputs and "
                         "parameters stay whole on the context-parallel axis (parc slices "
                         "the sequence)", span, help=f"leave `{name}` whole (B) on `{axis}`")
            return
    for info in checker.model.inputs:
        seq = info.type.shape[1].as_int() if info.type.rank > 1 else None
        if seq is not None and seq % (2 * size):
            checker.fail("E353", where + f"the sequence of `{info.name}` ({seq}) does not cut "
                         f"into 2 x {axis} = {2 * size} equal chunks (the causal load balance "
                         f"gives rank i chunks i and {2 * size - 1} - i)", span)
            return
