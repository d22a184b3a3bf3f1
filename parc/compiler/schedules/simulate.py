"""Event-driven replay of a schedule with per-action costs: step time, bubble, memory, timeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .schedule import Action, Schedule


@dataclass(frozen=True)
class Event:
    rank: int
    action: Action
    start: float
    end: float


@dataclass
class Simulation:
    step_time: float
    bubble_ratio: float  # idle share of the step, averaged over ranks
    busy: list[float]  # compute seconds per rank
    peak_activation_bytes: list[float]
    peak_inflight: list[int]  # most microbatches holding activations at once, per rank
    events: list[Event] = field(default_factory=list)


_STRUCTURE: dict[int, tuple] = {}  # id(schedule) -> (schedule, per-rank steps)


def _structure(s: Schedule) -> list[list[tuple]]:
    """Per rank: (action, [(dependency, its rank)], destination rank of its message or None),
    worked out once per schedule (plans reuse the same schedule many times)."""
    cached = _STRUCTURE.get(id(s))
    if cached is not None and cached[0] is s:
        return cached[1]
    steps = []
    for rank in s.ranks:
        row = []
        for action in rank:
            deps = [(d, s.stage_rank[d.stage]) for d in s.dependencies(action)]
            message = s.sends(action)
            row.append((action, deps, s.stage_rank[message.dst_stage] if message else None))
        steps.append(row)
    if len(_STRUCTURE) > 512:
        _STRUCTURE.clear()
    _STRUCTURE[id(s)] = (s, steps)
    return steps


def _posted_times(s: Schedule, order, cost: Callable[[Action], float],
                  p2p: Callable[[Action, int, int], float] | None,
                  collectives: list[Event]) -> dict[Action, float]:
    """Start times when every rank follows its posting order (posting.py): posting a group
    costs the rank nothing; an action that receives starts when every group the rank has
    posted is done (groups complete in posting order, as on one NCCL stream), one that
    receives nothing does not wait for the sends still in flight; a group is done when each
    of its operations has its counterpart posted and the message has crossed, and the group
    before it is done. A collective over the pipeline group (a vocabulary pass, on a
    communicator of its own) starts when every rank has reached it; it is appended to
    `collectives`."""
    sends: dict[tuple[int, int], list[float]] = {}  # channel -> post times, in order
    recvs: dict[tuple[int, int], list[float]] = {}
    slots: dict[tuple[int, int, int], int] = {}
    clock = [0.0] * len(order)
    pointer = [0] * len(order)
    in_flight: list[list[int]] = [[] for _ in order]  # posted groups not yet done, in order
    done_at = [0.0] * len(order)  # when the last group done so far completed
    starts: dict[Action, float] = {}

    def channel(rank: int, p) -> tuple[int, int]:
        peer = s.stage_rank[p.peer_stage]
        return (rank, peer) if p.op == "send" else (peer, rank)

    def complete(r: int) -> float | None:
        """When every group rank r has posted is done; None while a counterpart is missing."""
        while in_flight[r]:
            k = in_flight[r][0]
            done = done_at[r]
            for i, p in enumerate(order[r][k].post):
                mine = (sends if p.op == "send" else recvs)[channel(r, p)]
                other = (recvs if p.op == "send" else sends).get(channel(r, p), [])
                j = slots[(r, k, i)]
                if len(other) <= j:
                    return None
                m = p.message
                sender = Action("F" if m.kind == "act" else "B", m.src_stage, m.mb)
                crossing = p2p(sender, s.stage_rank[m.src_stage],
                               s.stage_rank[m.dst_stage]) if p2p else 0.0
                done = max(done, max(mine[j], other[j]) + crossing)
            done_at[r] = done
            in_flight[r].pop(0)
        return done_at[r]

    while any(pointer[r] < len(steps) or in_flight[r] for r, steps in enumerate(order)):
        moved = False
        for r, steps in enumerate(order):
            while pointer[r] < len(steps):
                step = steps[pointer[r]]
                if step.collective is not None:
                    break  # every rank joins it at once (below)
                if step.run is not None:
                    if in_flight[r] and s.receives(step.run) is not None:
                        ready = complete(r)
                        if ready is None:
                            break
                        clock[r] = max(clock[r], ready)
                    starts[step.run] = clock[r]
                    clock[r] += cost(step.run)
                    pointer[r] += 1
                    moved = True
                    continue
                for i, p in enumerate(step.post):
                    queue = (sends if p.op == "send" else recvs).setdefault(channel(r, p), [])
                    slots[(r, pointer[r], i)] = len(queue)
                    queue.append(clock[r])
                in_flight[r].append(pointer[r])
                pointer[r] += 1
                moved = True
            if pointer[r] == len(steps) and in_flight[r] and complete(r) is not None:
                moved = True
        if not moved and all(pointer[r] < len(steps) and steps[pointer[r]].collective
                             is not None for r, steps in enumerate(order)):
            what = order[0][pointer[0]].collective
            start = max(clock)
            for r in range(len(order)):
                collectives.append(Event(r, what, start, start + cost(what)))
                clock[r] = start + cost(what)
                pointer[r] += 1
            moved = True
        if not moved:
            raise RuntimeError("the posting order deadlocks (validate it first)")
    return starts


def simulate(schedule: Schedule, cost: Callable[[Action], float],
             p2p: Callable[[Action, int, int], float] | None = None,
             activation_bytes: Callable[[int], float] | None = None,
             order=None) -> Simulation:
    """Replay `schedule`. `cost(action)` is its duration; `p2p(action, src, dst)` the time its
    message takes between ranks; `activation_bytes(stage)` what one microbatch holds there.
    With `order` (the posting order the runtime follows) an action that receives waits for
    the groups posted before it, as on NCCL; without it, sends are buffered and an action
    waits only for its inputs (the schedule's own figures)."""
    s = schedule
    steps = _structure(s)
    collectives: list[Event] = []  # vocabulary passes: every rank at once
    posted = _posted_times(s, order, cost, p2p, collectives) if order is not None else None
    finish: dict[Action, float] = {}
    arrive: dict[tuple[Action, int], float] = {}  # (producer, consumer rank) -> arrival
    free = [0.0] * s.num_ranks
    pointer = [0] * s.num_ranks
    events: list[Event] = []
    total = sum(len(rank) for rank in s.ranks)
    last_part = "F" if s.forward_only else "W" if s.split_backward else "B"
    live = [0.0] * s.num_ranks
    peak = [0.0] * s.num_ranks
    inflight = [0] * s.num_ranks
    peak_inflight = [0] * s.num_ranks
    held = {}
    count = 0
    while count < total:
        progressed = False
        for r, row in enumerate(steps):
            while pointer[r] < len(row):
                action, deps, dst = row[pointer[r]]
                start = free[r]
                ready = True
                for d, src in deps:
                    if d not in finish:
                        ready = False
                        break
                    t = finish[d] if src == r else arrive[(d, r)]
                    if t > start:
                        start = t
                if not ready:
                    break
                if posted is not None:
                    start = max(start, posted[action])
                end = start + cost(action)
                finish[action] = end
                free[r] = end
                events.append(Event(r, action, start, end))
                if dst is not None:
                    arrive[(action, dst)] = end + (p2p(action, r, dst) if p2p else 0.0)
                if not s.forward_only:
                    if action.op == "F":
                        size = held.setdefault(action.stage, activation_bytes(action.stage)
                                               if activation_bytes else 1.0)
                        live[r] += size
                        inflight[r] += 1
                        peak[r] = max(peak[r], live[r])
                        peak_inflight[r] = max(peak_inflight[r], inflight[r])
                    if action.op == last_part:
                        live[r] -= held.setdefault(action.stage, activation_bytes(action.stage)
                                                   if activation_bytes else 1.0)
                        inflight[r] -= 1
                pointer[r] += 1
                count += 1
                progressed = True
        if not progressed:
            raise RuntimeError("the schedule deadlocks (validate it first)")
    for e in collectives:
        free[e.rank] = max(free[e.rank], e.end)
    if collectives:
        events = sorted(events + collectives, key=lambda e: (e.start, e.rank))
    step = max(free) if free else 0.0
    busy = [0.0] * s.num_ranks
    for e in events:
        busy[e.rank] += e.end - e.start
    bubble = 1.0 - sum(busy) / (s.num_ranks * step) if step > 0 else 0.0
    if s.forward_only:
        peak_inflight = [1] * s.num_ranks
    return Simulation(step, bubble, busy, peak, peak_inflight, events)


def uniform_cost(split_backward: bool) -> Callable[[Action], float]:
    """The design's uniform costs: F = 1, B = 2, or F = B = W = 1 when the backward is split."""
    table = {"F": 1.0, "B": 1.0, "W": 1.0} if split_backward else {"F": 1.0, "B": 2.0}
    return lambda action: table[action.op]
