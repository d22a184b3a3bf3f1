"""The schedule validator: complete, dependency-ordered, p2p-matched and deadlock-free.

Every schedule is validated before anything uses it, and so is the executor's real posting
order (posting.py) under NCCL's rules: between two ranks point-to-point operations match in
the order they are posted (tags are ignored), a send completes only when its receive is
posted, and a rank waits for a whole group before it goes on. The executor waits less: it
leaves a group of sends alone in flight while it computes (posting.py). That cannot hang an
order proved here: the messages match in the same posted order, a group needs the same
counterparts to complete, and each of the executor's waits is one of the waits replayed here,
so a run that completes with every wait completes with fewer. A failure names the rank, the
step and the action, so a broken hand-made schedule reads like a bug report.
"""

from __future__ import annotations

import functools
from collections import Counter

from .posting import P2P, Step, candidate_orders
from .schedule import Action, Schedule


class ScheduleError(ValueError):
    pass


def validate(schedule: Schedule) -> None:
    _complete(schedule)
    _local_order(schedule)
    _progress(schedule)
    runnable_order(schedule)


@functools.lru_cache(maxsize=512)
def runnable_order(schedule: Schedule) -> tuple[tuple[Step, ...], ...]:
    """The first posting order NCCL can run (posting.candidate_orders, best first); the
    first one's error when none can."""
    errors = []
    for order in candidate_orders(schedule):
        try:
            check_posting(schedule, order)
            return order
        except ScheduleError as exc:
            errors.append(exc)
    raise errors[0]


def runnable(candidates: list[Schedule]) -> list[Schedule]:
    """The candidates that validate (posting orders NCCL can run included)."""
    out = []
    for candidate in candidates:
        try:
            validate(candidate)
            out.append(candidate)
        except ScheduleError:
            pass
    return out


def _complete(s: Schedule) -> None:
    expected = s.expected_actions()
    seen = Counter(a for rank in s.ranks for a in rank)
    for action, count in seen.items():
        if count > 1:
            raise ScheduleError(f"{action} runs {count} times")
        if action not in expected:
            raise ScheduleError(f"{action} is not part of this schedule (stage {action.stage} "
                                f"is not on microbatch {action.mb}'s path, or the op is wrong)")
    missing = sorted(expected - set(seen))
    if missing:
        raise ScheduleError(f"{missing[0]} never runs ({len(missing)} actions missing)")
    for r, rank in enumerate(s.ranks):
        for step, action in enumerate(rank):
            if s.stage_rank[action.stage] != r:
                raise ScheduleError(f"rank {r}, step {step}: {action} belongs to rank "
                                    f"{s.stage_rank[action.stage]}")


def _local_order(s: Schedule) -> None:
    for r, rank in enumerate(s.ranks):
        position = {a: i for i, a in enumerate(rank)}
        for step, action in enumerate(rank):
            for dep in s.dependencies(action):
                if s.stage_rank[dep.stage] == r and position[dep] > step:
                    raise ScheduleError(f"rank {r}, step {step}: {action} runs before {dep}, "
                                        "which it depends on")


def _progress(s: Schedule) -> None:
    """Run the schedule with blocking receives and buffered sends; report where it sticks."""
    done: set[Action] = set()
    pointer = [0] * s.num_ranks
    total = sum(len(rank) for rank in s.ranks)
    while len(done) < total:
        progressed = False
        for r, rank in enumerate(s.ranks):
            while pointer[r] < len(rank):
                action = rank[pointer[r]]
                if any(dep not in done for dep in s.dependencies(action)):
                    break
                done.add(action)
                pointer[r] += 1
                progressed = True
        if not progressed:
            stuck = [(r, pointer[r], s.ranks[r][pointer[r]]) for r in range(s.num_ranks)
                     if pointer[r] < len(s.ranks[r])]
            r, step, action = stuck[0]
            waiting = [str(d) for d in s.dependencies(action) if d not in done]
            raise ScheduleError(f"deadlock: rank {r} is stuck at step {step} on {action}, "
                                f"waiting for {', '.join(waiting)}")


def _where(step: int, steps: tuple[Step, ...]) -> str:
    """The action a posted group comes before (or after, at the end of the step)."""
    after = next((s.run for s in steps[step + 1:] if s.run is not None), None)
    if after is not None:
        return f"before {after}"
    before = next((s.run for s in reversed(steps[:step]) if s.run is not None), None)
    return f"after {before}" if before is not None else "with nothing to run"


def _joined(order: tuple[tuple[Step, ...], ...], pointer: list[int]) -> bool:
    """When every rank waits at a collective over the pipeline group: check they are the
    same one (NCCL would hang or mix them up otherwise), let them all through, True."""
    at = [order[r][pointer[r]].collective if pointer[r] < len(order[r]) else None
          for r in range(len(order))]
    if any(a is None for a in at):
        return False
    if len(set(at)) > 1:
        shown = ", ".join(f"rank {r} at step {pointer[r]}: {a.op} of microbatch {a.mb}"
                          for r, a in enumerate(at))
        raise ScheduleError(f"collective order differs between the ranks ({shown})")
    for r in range(len(order)):
        pointer[r] += 1
    return True


def check_posting(s: Schedule, order: tuple[tuple[Step, ...], ...]) -> None:
    """Replay every rank's posting order under NCCL's rules: matched in posting order per
    pair of ranks, a group done only when each of its operations has its counterpart posted,
    one group at a time per rank. Raise on a deadlock or a message landing in the wrong
    receive."""
    # (sender rank, receiver rank) -> posted sends / receives, in order, with the step
    sends: dict[tuple[int, int], list[tuple[P2P, int]]] = {}
    recvs: dict[tuple[int, int], list[tuple[P2P, int]]] = {}
    slot: dict[tuple[int, int, int], int] = {}  # (rank, step, op index) -> channel position
    pointer = [0] * len(order)
    posted = [False] * len(order)

    def channel(rank: int, p: P2P) -> tuple[int, int]:
        peer = s.stage_rank[p.peer_stage]
        return (rank, peer) if p.op == "send" else (peer, rank)

    def done(rank: int, step: int, group: tuple[P2P, ...]) -> bool:
        for i, p in enumerate(group):
            other = recvs if p.op == "send" else sends
            if len(other.get(channel(rank, p), [])) <= slot[(rank, step, i)]:
                return False
        return True

    while True:
        moved = False
        for r, steps in enumerate(order):
            while pointer[r] < len(steps):
                step = steps[pointer[r]]
                if step.collective is not None:
                    break  # waits for every rank to reach it (below)
                if step.run is not None:
                    pointer[r] += 1
                    moved = True
                    continue
                if not posted[r]:
                    for i, p in enumerate(step.post):
                        posted_here = sends if p.op == "send" else recvs
                        queue = posted_here.setdefault(channel(r, p), [])
                        slot[(r, pointer[r], i)] = len(queue)
                        queue.append((p, pointer[r]))
                    posted[r] = True
                    moved = True
                if not done(r, pointer[r], step.post):
                    break
                pointer[r] += 1
                posted[r] = False
        if all(pointer[r] == len(steps) for r, steps in enumerate(order)):
            break
        if not moved and _joined(order, pointer):
            moved = True
        if not moved:
            at = [(r, order[r][pointer[r]].collective) for r in range(len(order))
                  if pointer[r] < len(order[r]) and order[r][pointer[r]].collective is not None]
            if at:
                r, what = at[0]
                others = [q for q in range(len(order)) if q not in dict(at)]
                q = others[0]
                there = (f"rank {q} waits at step {pointer[q]} ({_where(pointer[q], order[q])})"
                         if pointer[q] < len(order[q]) else f"rank {q} has finished")
                raise ScheduleError(
                    f"deadlock under NCCL's rules: rank {r} waits at step {pointer[r]} in the "
                    f"collective {what.op} of microbatch {what.mb} over the pipeline group, "
                    f"but {there}")
            r = next(r for r, steps in enumerate(order) if pointer[r] < len(steps))
            step = pointer[r]
            group = order[r][step].post
            waiting = next(p for i, p in enumerate(group)
                           if len((recvs if p.op == "send" else sends).get(channel(r, p), []))
                           <= slot[(r, step, i)])
            peer = s.stage_rank[waiting.peer_stage]
            there = order[peer][pointer[peer]] if pointer[peer] < len(order[peer]) else None
            if there is not None and there.post:
                where = _where(pointer[peer], order[peer])
                other = (f"rank {peer} waits at step {pointer[peer]} ({where}) to " +
                         ", ".join(str(p) for p in there.post))
            else:
                other = f"rank {peer} has finished"
            raise ScheduleError(
                f"deadlock under NCCL's rules: rank {r} waits at step {step} "
                f"({_where(step, order[r])}) to {waiting}, but {other}")
    for (a, b), sent in sends.items():
        got = recvs.get((a, b), [])
        for k, ((x, sa), (y, sb)) in enumerate(zip(sent, got)):
            if x.message != y.message:
                mx, my = x.message, y.message
                raise ScheduleError(
                    f"rank {a} -> rank {b}: p2p order differs: message {k} is sent as "
                    f"{mx.kind} of microbatch {mx.mb} (stage {mx.src_stage}->{mx.dst_stage}, "
                    f"rank {a} step {sa}, {_where(sa, order[a])}) but received as {my.kind} "
                    f"of microbatch {my.mb} (stage {my.src_stage}->{my.dst_stage}, rank {b} "
                    f"step {sb}, {_where(sb, order[b])})")
        if len(sent) != len(got):
            raise ScheduleError(f"rank {a} -> rank {b}: {len(sent)} sends but {len(got)} "
                                "receives")
