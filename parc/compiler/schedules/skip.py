"""SkipPipe-style skip schedules: each microbatch follows a path that skips whole stages.

The paths come from skip_paths.py (rules, and the search for fast ones). The order on each
rank comes from list scheduling under a few memory limits and priorities (and 1F1B order
where it runs); the fastest under the runtime's posting order wins, the leaner on a tie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from .list_schedule import list_schedule
from .one_f_one_b import one_f_one_b
from .schedule import Action, Schedule
from .simulate import simulate, uniform_cost
from .skip_paths import Paths, choose_paths, greedy_paths
from .validate import ScheduleError, runnable, runnable_order

P2P = Callable[[Action, int, int], float]


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


def _filtered_order(template: Schedule) -> Schedule:
    """1F1B's order over all microbatches with the skipped visits left out: every rank keeps
    the full pipeline's rhythm, and a skip leaves a gap instead of pulling work forward."""
    if template.forward_only:
        return _gpipe_order(template)
    full = one_f_one_b(template.num_ranks, template.num_microbatches)
    expected = template.expected_actions()
    return replace(template, ranks=tuple(tuple(a for a in rank if a in expected)
                                         for rank in full.ranks))


def _gpipe_order(template: Schedule) -> Schedule:
    """Every rank's forwards, then its backwards, each in microbatch order: always runs."""
    ranks = []
    for r in range(template.num_ranks):
        mbs = [m for m, path in enumerate(template.paths) if r in path]
        backward = () if template.forward_only else tuple(Action("B", r, m) for m in mbs)
        ranks.append(tuple(Action("F", r, m) for m in mbs) + backward)
    return replace(template, ranks=tuple(ranks))


def _orders(template: Schedule, cost: Callable[[Action], float], p2p: P2P | None,
            quick: bool) -> tuple[Schedule, float]:
    """The fastest runnable order over `template`'s paths and its posted step time: list
    schedules under three memory limits, backward or forward first, 1F1B's and GPipe's
    order, each posted as is and with its skipping sends held (`quick`: no list
    schedules, the search's cheap estimate)."""
    p = template.num_ranks
    candidates = []
    limits = [[p - r for r in range(p)], [p - r + 1 for r in range(p)],
              [2 * (p - r) for r in range(p)]]
    for limit in [] if quick else limits:
        for backward_first in (True, False):
            candidates.append(list_schedule(template, limit, cost,
                                            backward_first=backward_first))
    candidates += [_one_f_one_b_order(template), _filtered_order(template),
                   _gpipe_order(template)]
    valid = runnable(candidates)  # each must also post in an order NCCL can run
    assert valid, "the GPipe order always runs"
    for c in list(valid):  # the same actions in the same order: only the posting differs
        held = replace(c, hold_hops=True)
        try:
            runnable_order(held)
            valid.append(held)
        except ScheduleError:
            pass

    def score(schedule: Schedule) -> tuple[float, int]:
        sim = simulate(schedule, cost, p2p, order=runnable_order(schedule))
        return sim.step_time, max(sim.peak_inflight)
    scores = {id(c): score(c) for c in valid}
    best = min(valid, key=lambda c: scores[id(c)])
    return best, scores[id(best)][0]


def search_tries(p: int, m: int) -> int:
    """How many exchanges the path search tries: more for small pipelines, where each
    simulation is cheap (a p = 8, m = 32 plan compiles in about 4 s on one CPU core)."""
    return max(8, min(64, 6000 // max(1, p * m)))


def skip(p: int, m: int, ratio: float, seed: int = 0, forward_only: bool = False,
         cost: Callable[[Action], float] | None = None, p2p: P2P | None = None,
         paths: Paths | None = None, search: bool = True, reorder: bool = False) -> Schedule:
    """The skip schedule: `paths` when given; else the fastest path set the search finds
    (skip_paths.choose_paths), or with `search` off the greedy one; then the fastest order
    over them that the validator proves deadlock-free under NCCL's rules, judged by
    simulating with `cost` and `p2p`."""
    cost = cost or uniform_cost(False)

    def template(chosen: Paths) -> Schedule:
        return Schedule("skip", p, p, m, tuple(range(p)), chosen, False, (), forward_only)

    if paths is None and search:
        hop = (lambda a, b: p2p(Action("F", a, 0), a, b)) if p2p is not None else None
        paths = choose_paths(p, m, ratio, seed,
                             lambda chosen: _orders(template(chosen), cost, p2p, True)[1],
                             search_tries(p, m), reorder, hop)
    elif paths is None:
        paths = greedy_paths(p, m, ratio, seed)
    return _orders(template(tuple(tuple(x) for x in paths)), cost, p2p, False)[0]
