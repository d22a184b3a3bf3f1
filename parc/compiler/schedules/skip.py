"""SkipPipe-style skip schedules: each microbatch follows a path that skips whole stages.

The order on each rank comes from list scheduling under a few memory limits and priorities
(and 1F1B order where it runs); the fastest in simulation wins, the leaner on a tie.

The first stage (embedding) and the last (head and loss) are never skipped, and a path visits
a stage at most once. Skips total ratio * middle stages * microbatches, spread evenly over the
microbatches; the stages a microbatch skips are the ones skipped least so far (ties broken by
a seeded shuffle), which spreads the load evenly and keeps consecutive microbatches from
wanting the same rank at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace

from .list_schedule import list_schedule
from .schedule import Action, Schedule
from .simulate import simulate, uniform_cost
from .validate import runnable, runnable_order


def skip_paths(num_stages: int, m: int, ratio: float, seed: int) -> tuple[tuple[int, ...], ...]:
    middle = list(range(1, num_stages - 1))
    total = math.floor(ratio * len(middle) * m + 0.5)  # skips over all microbatches
    rng = random.Random(seed)
    tiebreak = {s: rng.random() for s in middle}
    skipped = {s: 0 for s in middle}
    paths = []
    for i in range(m):
        k = (i + 1) * total // m - i * total // m  # spread the skips evenly over microbatches
        chosen = set(sorted(middle, key=lambda s: (skipped[s], tiebreak[s]))[:k])
        for s in chosen:
            skipped[s] += 1
        for s in middle:  # reshuffle ties so the rotation does not repeat one pattern
            tiebreak[s] = rng.random()
        paths.append(tuple(s for s in range(num_stages) if s not in chosen))
    return tuple(paths)


def achieved_ratio(schedule: Schedule) -> float:
    middle = schedule.num_stages - 2
    if middle <= 0:
        return 0.0
    skipped = sum(schedule.num_stages - len(path) for path in schedule.paths)
    return skipped / (middle * schedule.num_microbatches)


def _one_f_one_b_order(template: Schedule) -> Schedule:
    """1F1B per rank over the microbatches whose paths visit it."""
    ranks = []
    for r in range(template.num_ranks):
        mbs = [m for m, path in enumerate(template.paths) if r in path]
        if template.forward_only:
            ranks.append(tuple(Action("F", r, m) for m in mbs))
            continue
        warmup = min(template.num_ranks - r - 1, len(mbs))
        actions = [Action("F", r, m) for m in mbs[:warmup]]
        for i in range(len(mbs) - warmup):
            actions += [Action("F", r, mbs[warmup + i]), Action("B", r, mbs[i])]
        actions += [Action("B", r, m) for m in mbs[len(mbs) - warmup:]]
        ranks.append(tuple(actions))
    return replace(template, ranks=tuple(ranks))


def _gpipe_order(template: Schedule) -> Schedule:
    """Every rank's forwards, then its backwards, each in microbatch order: always runs."""
    ranks = []
    for r in range(template.num_ranks):
        mbs = [m for m, path in enumerate(template.paths) if r in path]
        backward = () if template.forward_only else tuple(Action("B", r, m) for m in mbs)
        ranks.append(tuple(Action("F", r, m) for m in mbs) + backward)
    return replace(template, ranks=tuple(ranks))


def skip(p: int, m: int, ratio: float, seed: int = 0, forward_only: bool = False,
         cost: Callable[[Action], float] | None = None) -> Schedule:
    """The skip schedule: 1F1B order over each rank's visits, or a greedy list schedule when
    that is faster, or GPipe's order, judged by simulating them with `cost`; only orders
    that the validator proves deadlock-free under NCCL's rules compete."""
    template = Schedule("skip", p, p, m, tuple(range(p)), skip_paths(p, m, ratio, seed), False,
                        (), forward_only)
    cost = cost or uniform_cost(False)
    candidates = []
    for limits in ([p - r for r in range(p)], [p - r + 1 for r in range(p)],
                   [2 * (p - r) for r in range(p)]):
        for backward_first in (True, False):
            candidates.append(list_schedule(template, limits, cost,
                                            backward_first=backward_first))
    candidates += [_one_f_one_b_order(template), _gpipe_order(template)]
    valid = runnable(candidates)  # each must also post in an order NCCL can run
    assert valid, "the GPipe order always runs"

    def score(schedule: Schedule) -> tuple[float, int]:
        sim = simulate(schedule, cost, order=runnable_order(schedule))
        return sim.step_time, max(sim.peak_inflight)
    return min(valid, key=score)
