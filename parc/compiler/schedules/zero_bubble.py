"""ZB-H1 (zero bubble): the backward splits into B (input gradient, on the critical path) and W
(weight gradient, any time after its B). W passes fill the bubbles of 1F1B while each rank
keeps at most 1F1B's p-r microbatches of activations, so memory stays at 1F1B's peak and the
bubble falls to about a third."""

from __future__ import annotations

from collections.abc import Callable

from .list_schedule import list_schedule
from .schedule import Action, Schedule, full_paths
from .simulate import uniform_cost


def zb_h1(p: int, m: int, cost: Callable[[Action], float] | None = None) -> Schedule:
    """Ordered by list scheduling with `cost` (default: F = B = W = 1)."""
    template = Schedule("zb_h1", p, p, m, tuple(range(p)), full_paths(p, m), True, ())
    return list_schedule(template, [p] * p, cost or uniform_cost(True))
