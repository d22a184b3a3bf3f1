"""ZB-H1 (zero bubble): the backward splits into B (input gradient, on the critical path) and W
(weight gradient, any time after its B). W passes fill the bubbles of 1F1B while each rank
keeps at most 1F1B's p-r microbatches of activations, so memory stays at 1F1B's peak and the
bubble falls to about a third."""

from __future__ import annotations

from .list_schedule import list_schedule
from .schedule import Schedule, full_paths


def zb_h1(p: int, m: int) -> Schedule:
    template = Schedule("zb_h1", p, p, m, tuple(range(p)), full_paths(p, m), True, ())
    return list_schedule(template, [p] * p, {"F": 1.0, "B": 1.0, "W": 1.0})
