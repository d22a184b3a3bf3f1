"""V-shaped zero-bubble schedules (Qi et al., "Pipeline Parallelism with Controllable
Memory", 2024): 2p stages on p ranks placed in a V, rank r holding stage r and stage
2p - 1 - r, so the first and the last stage share rank 0 and a microbatch turns round on rank
p - 1 without crossing a link. The backward splits into B and W as in ZB-H1.

- ZB-V: each rank holds at most 2p microbatch-chunks of activations (1F1B's peak: p
  microbatches of a stage twice a chunk's size); the W passes fill the bubbles, which
  nearly vanish.
- V-Half: at most p + 2 microbatch-chunks, about half of 1F1B's (p / 2 + 1 microbatches of
  a whole rank's layers against p), for a small bubble.

The order is found by list scheduling under that memory cap, with two rules the V needs: a
forward into the first chunk reserves room for the same microbatch's forward into the
second (otherwise first-chunk forwards fill the cap and nothing frees it), and between two
ranks messages are consumed in the order they were sent (the V sends activations and
gradients over the same link both ways; NCCL matches them by posting order alone). Among a
few priorities the fastest order that posts in an order NCCL can run is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from .schedule import Action, Schedule, full_paths
from .simulate import simulate, uniform_cost

# each family's memory cap per rank in microbatch-chunks, for p ranks
# (V-Half: p / 2 + 1 microbatches of a whole rank's layers, the paper's p / 2 + O(1))
CAPS = {"zb_v": lambda p: 2 * p, "v_half": lambda p: p + 2}


def v_placement(p: int) -> tuple[int, ...]:
    """Stage -> rank: 0, 1, ..., p - 1, p - 1, ..., 1, 0."""
    return tuple(range(p)) + tuple(reversed(range(p)))


def template(family: str, p: int, m: int) -> Schedule:
    return Schedule(family, p, 2 * p, m, v_placement(p), full_paths(2 * p, m), True, ())


def v_list_schedule(t: Schedule, cap: int, cost: Callable[[Action], float],
                    priority: dict[str, int]) -> Schedule | None:
    """`t`'s actions ordered greedily: the ready action with the earliest start (ties by
    `priority`), at most `cap` microbatch-chunks held per rank from F to W; None when the
    rules leave nothing to run."""
    p = t.num_ranks
    expected = t.expected_actions()
    deps = {a: t.dependencies(a) for a in expected}
    pending: list[set[Action]] = [set() for _ in range(p)]
    for a in expected:
        pending[t.stage_rank[a.stage]].add(a)
    done: dict[Action, float] = {}
    free = [0.0] * p
    held = [0] * p  # chunks from F to W
    reserved = [0] * p  # first-chunk forwards whose second-chunk forward has not run
    next_f = [0] * t.num_stages  # forwards of a stage run in microbatch order
    sent: dict[tuple[int, int], list[Action]] = {}  # (src rank, dst rank) -> consumers
    taken: dict[tuple[int, int], int] = {}
    order: list[list[Action]] = [[] for _ in range(p)]

    def channel_ok(action: Action) -> bool:
        message = t.receives(action)
        if message is None:
            return True
        key = (t.stage_rank[message.src_stage], t.stage_rank[message.dst_stage])
        queue = sent.get(key, [])
        k = taken.get(key, 0)
        return k < len(queue) and queue[k] == action

    def start(r: int, action: Action) -> float | None:
        if action.op == "F":
            if next_f[action.stage] != action.mb:
                return None
            # a first-chunk forward needs room for itself and its second-chunk forward, which
            # then runs in the room reserved for it
            if action.stage < p and held[r] + reserved[r] + 2 > cap:
                return None
        t0 = free[r]
        for d in deps[action]:
            if d not in done:
                return None
            t0 = max(t0, done[d])
        if not channel_ok(action):
            return None
        return t0

    remaining = len(expected)
    while remaining:
        best = None
        for r in range(p):
            for action in pending[r]:
                s = start(r, action)
                if s is None:
                    continue
                key = (s, priority[action.op], action.mb, -action.stage, r)
                if best is None or key < best[0]:
                    best = (key, r, action)
        if best is None:
            return None
        (s, *_), r, action = best
        done[action] = s + cost(action)
        free[r] = done[action]
        pending[r].discard(action)
        order[r].append(action)
        remaining -= 1
        message = t.receives(action)
        if message is not None:
            key = (t.stage_rank[message.src_stage], r)
            taken[key] = taken.get(key, 0) + 1
        out = t.sends(action)
        if out is not None:
            consumer = Action("F" if out.kind == "act" else "B", out.dst_stage, out.mb)
            sent.setdefault((r, t.stage_rank[out.dst_stage]), []).append(consumer)
        if action.op == "F":
            next_f[action.stage] += 1
            held[r] += 1
            reserved[r] += 1 if action.stage < p else -1
        if action.op == "W":
            held[r] -= 1
    return Schedule(t.family, p, t.num_stages, t.num_microbatches, t.stage_rank, t.paths,
                    True, tuple(tuple(o) for o in order))


PRIORITIES = ({"B": 0, "F": 1, "W": 2}, {"F": 0, "B": 1, "W": 2})


def v_schedule(family: str, p: int, m: int,
               cost: Callable[[Action], float] | None = None) -> Schedule:
    """The fastest, under `cost` (default F = B = W = 1), of the orders list scheduling
    finds within the family's memory cap that post in an order NCCL can run."""
    from .validate import runnable, runnable_order

    if p < 1 or m < 1:
        raise ValueError(f"{family} needs at least one rank and one microbatch")
    cost = cost or uniform_cost(True)
    t = template(family, p, m)
    cap = CAPS[family](p)
    found = [s for prio in PRIORITIES if (s := v_list_schedule(t, cap, cost, prio))]
    valid = runnable(found)
    if not valid:
        raise ValueError(f"{family} found no order for p = {p}, m = {m} that NCCL can run")
    return min(valid, key=lambda s: simulate(s, cost, order=runnable_order(s)).step_time)


def zb_v(p: int, m: int, cost: Callable[[Action], float] | None = None) -> Schedule:
    return v_schedule("zb_v", p, m, cost)


def v_half(p: int, m: int, cost: Callable[[Action], float] | None = None) -> Schedule:
    return v_schedule("v_half", p, m, cost)
