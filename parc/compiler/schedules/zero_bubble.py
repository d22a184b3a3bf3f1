"""ZB-H1 (zero bubble): the backward splits into B (input gradient, on the critical path) and W
(weight gradient, any time after its B). W passes fill the bubbles of 1F1B while each rank
holds at most p microbatches, and the bubble falls to a third of 1F1B's.

The handcrafted order (Qi et al., "Zero Bubble Pipeline Parallelism"): 1F1B's order of F and B,
with rank r running each W r backwards late (W of microbatch i right after B of i + r, the
last r at the end). With F = B = W and m >= p it takes 3m + p - 1 slots against 1F1B's
3m + 3(p - 1).
When the cost model gives unequal passes, list scheduling with those costs can do better; the
faster of the two orders that post in an order NCCL can run is kept, timed as the runtime
posts them (a send waits for its receive to be posted).
"""

from __future__ import annotations

from collections.abc import Callable

from .list_schedule import list_schedule
from .schedule import Action, Schedule, full_paths
from .simulate import simulate, uniform_cost
from .validate import runnable, runnable_order


def handcrafted(p: int, m: int) -> Schedule:
    ranks = []
    for r in range(p):
        warmup = min(p - r - 1, m)
        order = [("F", mb) for mb in range(warmup)]
        for i in range(m - warmup):
            order += [("F", warmup + i), ("B", i)]
        order += [("B", mb) for mb in range(m - warmup, m)]
        actions = []
        for op, mb in order:  # each W r backwards late, the last r at the end
            actions.append(Action(op, r, mb))
            if op == "B" and mb >= r:
                actions.append(Action("W", r, mb - r))
        actions += [Action("W", r, mb) for mb in range(max(0, m - r), m)]
        ranks.append(tuple(actions))
    return Schedule("zb_h1", p, p, m, tuple(range(p)), full_paths(p, m), True, tuple(ranks))


def zb_h1(p: int, m: int, cost: Callable[[Action], float] | None = None) -> Schedule:
    """The faster, under `cost` (default: F = B = W = 1), of the handcrafted order and the
    list-scheduled one."""
    cost = cost or uniform_cost(True)
    template = Schedule("zb_h1", p, p, m, tuple(range(p)), full_paths(p, m), True, ())
    orders = [handcrafted(p, m), list_schedule(template, [p] * p, cost)]
    valid = runnable(orders)  # each must also post in an order NCCL can run
    assert valid, "the handcrafted order always runs"
    return min(valid, key=lambda s: simulate(s, cost, order=runnable_order(s)).step_time)
