"""SkipPipe-style skip schedules: each microbatch follows a path that skips whole stages.

The first stage (embedding) and the last (head and loss) are never skipped, and a path visits
a stage at most once. Each microbatch skips round(ratio * middle stages); the stages it skips
are the ones skipped least so far (ties broken by a seeded shuffle), which spreads the load
evenly and keeps consecutive microbatches from wanting the same rank at once.
"""

from __future__ import annotations

import random

from .list_schedule import list_schedule
from .schedule import Schedule


def skip_paths(num_stages: int, m: int, ratio: float, seed: int) -> tuple[tuple[int, ...], ...]:
    middle = list(range(1, num_stages - 1))
    k = round(ratio * len(middle))
    rng = random.Random(seed)
    tiebreak = {s: rng.random() for s in middle}
    skipped = {s: 0 for s in middle}
    paths = []
    for _ in range(m):
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


def skip(p: int, m: int, ratio: float, seed: int = 0, forward_only: bool = False) -> Schedule:
    template = Schedule("skip", p, p, m, tuple(range(p)), skip_paths(p, m, ratio, seed), False,
                        (), forward_only)
    return list_schedule(template, [p - r for r in range(p)], {"F": 1.0, "B": 2.0, "W": 0.0})
