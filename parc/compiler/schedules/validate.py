"""The schedule validator: complete, dependency-ordered, p2p-matched and deadlock-free.

Every schedule is validated before anything uses it. A failure names the rank, the step and
the action, so a broken hand-made schedule reads like a bug report.
"""

from __future__ import annotations

from collections import Counter

from .schedule import Action, Schedule


class ScheduleError(ValueError):
    pass


def validate(schedule: Schedule) -> None:
    _complete(schedule)
    _local_order(schedule)
    _p2p_matched(schedule)
    _progress(schedule)


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


def _p2p_matched(s: Schedule) -> None:
    """Messages between two ranks are received in the order they are sent (as NCCL requires)."""
    sent: dict[tuple[int, int], list] = {}
    received: dict[tuple[int, int], list] = {}
    for r, rank in enumerate(s.ranks):
        for action in rank:
            out = s.sends(action)
            if out is not None:
                sent.setdefault((r, s.stage_rank[out.dst_stage]), []).append(out)
            inp = s.receives(action)
            if inp is not None:
                received.setdefault((s.stage_rank[inp.src_stage], r), []).append(inp)
    for pair in set(sent) | set(received):
        a, b = sent.get(pair, []), received.get(pair, [])
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                raise ScheduleError(
                    f"rank {pair[0]} -> rank {pair[1]}: message {i} is sent as {x.kind} of "
                    f"microbatch {x.mb} (stage {x.src_stage}->{x.dst_stage}) but received as "
                    f"{y.kind} of microbatch {y.mb} (stage {y.src_stage}->{y.dst_stage}); "
                    "p2p order differs")
        if len(a) != len(b):
            raise ScheduleError(f"rank {pair[0]} -> rank {pair[1]}: {len(a)} sends but "
                                f"{len(b)} receives")


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
