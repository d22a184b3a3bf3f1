"""Pipeline schedules: one file per family, plus the validator and the simulator.

Every family produces the same Schedule: per rank, an ordered list of F/B/W actions.
"""

from __future__ import annotations

import functools

from .gpipe import gpipe
from .interleaved import interleaved
from .one_f_one_b import one_f_one_b
from .schedule import Action, Schedule
from .skip import skip
from .v_shape import v_half, v_placement, zb_v
from .zero_bubble import zb_h1

FAMILIES = ("gpipe", "1f1b", "interleaved", "zb_h1", "zb_v", "v_half", "skip")
FIXED = ("gpipe", "1f1b", "interleaved")  # orders that do not depend on costs
SPLIT = ("zb_h1", "zb_v", "v_half")  # families whose backward splits into B and W
V_SHAPED = ("zb_v", "v_half")  # two chunks per rank, placed in a V


def chunks_per_rank(family: str, virtual: int = 1) -> int:
    """Stages (model chunks) each pipeline rank holds under a family."""
    if family in V_SHAPED:
        return 2
    return virtual if family == "interleaved" else 1


def placement(family: str, num_ranks: int, num_stages: int) -> tuple[int, ...]:
    """Stage -> the pipeline rank that runs it: a V for the V-shaped families, round robin
    (stage s on rank s % p) for the others. Everything that asks where a stage runs (the
    partition's links, the plan's ranks and memory, plan.json) asks here."""
    if family in V_SHAPED:
        assert num_stages == 2 * num_ranks, (family, num_ranks, num_stages)
        return v_placement(num_ranks)
    return tuple(s % num_ranks for s in range(num_stages))


@functools.lru_cache(maxsize=256)
def validated(family: str, num_ranks: int, num_microbatches: int, virtual: int = 1) -> Schedule:
    """A fixed-order family's schedule, built and validated once per shape."""
    from .validate import validate

    schedule = build(family, num_ranks, num_microbatches, virtual)
    validate(schedule)
    return schedule


def build(family: str, num_ranks: int, num_microbatches: int, virtual: int = 1,
          ratio: float = 0.0, seed: int = 0, cost=None, p2p=None, paths=None,
          search: bool = True, reorder: bool = False) -> Schedule:
    """The schedule of a family for p ranks and m microbatches. The families ordered by list
    scheduling (zb_h1, zb_v, v_half, skip) use `cost(action)` when given, uniform costs
    otherwise; skip also `p2p(action, src, dst)` (message times), and takes its `paths` as
    given or finds them (skip_paths.py: `search`, `reorder`)."""
    if family == "gpipe":
        return gpipe(num_ranks, num_microbatches)
    if family == "1f1b":
        return one_f_one_b(num_ranks, num_microbatches)
    if family == "interleaved":
        return interleaved(num_ranks, num_microbatches, virtual)
    if family == "zb_h1":
        return zb_h1(num_ranks, num_microbatches, cost)
    if family == "zb_v":
        return zb_v(num_ranks, num_microbatches, cost)
    if family == "v_half":
        return v_half(num_ranks, num_microbatches, cost)
    if family == "skip":
        return skip(num_ranks, num_microbatches, ratio, seed, cost=cost, p2p=p2p, paths=paths,
                    search=search, reorder=reorder)
    raise ValueError(f"unknown schedule family `{family}`")


__all__ = ["FAMILIES", "FIXED", "SPLIT", "V_SHAPED", "Action", "Schedule", "build",
           "chunks_per_rank", "placement", "validated"]
