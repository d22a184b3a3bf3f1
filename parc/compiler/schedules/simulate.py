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


def simulate(schedule: Schedule, cost: Callable[[Action], float],
             p2p: Callable[[Action, int, int], float] | None = None,
             activation_bytes: Callable[[int], float] | None = None) -> Simulation:
    """Replay `schedule`. `cost(action)` is its duration; `p2p(action, src, dst)` the time its
    message takes between ranks; `activation_bytes(stage)` what one microbatch holds there."""
    s = schedule
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
    count = 0
    while count < total:
        progressed = False
        for r, rank in enumerate(s.ranks):
            while pointer[r] < len(rank):
                action = rank[pointer[r]]
                deps = s.dependencies(action)
                if any(d not in finish for d in deps):
                    break
                start = free[r]
                for d in deps:
                    src = s.stage_rank[d.stage]
                    ready = finish[d] if src == r else arrive[(d, r)]
                    start = max(start, ready)
                end = start + cost(action)
                finish[action] = end
                free[r] = end
                events.append(Event(r, action, start, end))
                if p2p is not None or True:
                    message = s.sends(action)
                    if message is not None:
                        dst = s.stage_rank[message.dst_stage]
                        delay = p2p(action, r, dst) if p2p is not None else 0.0
                        arrive[(action, dst)] = end + delay
                if action.op == "F" and not s.forward_only:
                    live[r] += activation_bytes(action.stage) if activation_bytes else 1.0
                    inflight[r] += 1
                    peak[r] = max(peak[r], live[r])
                    peak_inflight[r] = max(peak_inflight[r], inflight[r])
                if action.op == last_part and not s.forward_only:
                    live[r] -= activation_bytes(action.stage) if activation_bytes else 1.0
                    inflight[r] -= 1
                pointer[r] += 1
                count += 1
                progressed = True
        if not progressed:
            raise RuntimeError("the schedule deadlocks (validate it first)")
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
