"""Placing the vocabulary passes (compiler/vocab.py: E, O and G per microbatch) in the
posting order of a pipeline schedule.

Each pass is a collective over the pipeline group, so every rank must reach the passes in
one global order. The order is that of their anchors in a simulation of the schedule
without them: E of microbatch m at the start of the first stage's forward of m (it makes
that forward's input), O at the end of the last stage's forward (that stage's backward
needs its gradient), G at the end of the first stage's backward. Each rank then joins
each pass just before its first action that the base simulation starts at or after the
anchor (so the anchor ranks keep the dependencies, and what any rank received before the
pass was sent before it), with the receives of messages sent before the pass posted
before it. The validator (validate.check_posting) proves the result under NCCL's rules;
an order it refuses is an error at the setting. `searched_vocab_order` instead joins the
passes one at a time against a simulation of the order so far, trying every boundary of
the last stage's rank between a microbatch's F and B for its O; plan.vocab_placement keeps
the fastest of all of these.

A simple, correct placement; the paper's, which hides the passes in the pipeline's
bubbles by moving the stages' own work around them, is left for later.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from .posting import P2P, Step
from .schedule import Action, Schedule
from .simulate import Event

VOCAB_STAGE = -1  # the stage field of a vocabulary pass: it runs on every rank
SEARCH_RANKS = 2  # up to this many ranks every mix of joining before or after is tried


def vocab_passes(schedule: Schedule, events: list[Event],
                 ends: bool = False) -> list[tuple[float, Action]]:
    """(anchor time, pass) for every microbatch, in the global order. With `ends`, every E
    runs at the start of the step and every G at its end (one wait each, not one per
    microbatch; the first stage keeps the microbatches' embeddings and their gradients
    meanwhile)."""
    start = {e.action: e.start for e in events}
    end = {e.action: e.end for e in events}
    last = schedule.num_stages - 1
    out = []
    for mb in range(schedule.num_microbatches):
        out.append((-1.0 if ends else start[Action("F", 0, mb)], 0,
                    Action("E", VOCAB_STAGE, mb)))
        out.append((end[Action("F", last, mb)], 1, Action("O", VOCAB_STAGE, mb)))
        out.append((float("inf") if ends else end[Action("B", 0, mb)], 2,
                    Action("G", VOCAB_STAGE, mb)))
    return [(t, a) for t, _, a in sorted(out, key=lambda x: (x[0], x[1], x[2].mb))]


def _join(steps: list[Step], what: Action, anchor: float, after: Callable[[Action], bool],
          sent_before: Callable[[P2P], bool]) -> list[Step]:
    """One rank's steps with the pass joined before its first action `after` the anchor.
    The actions before the pass on every rank then form a consistent cut (what one
    receives there was sent before the pass too); the receives of messages sent
    before it are posted before it, wherever their action runs, the other receives of the
    group in front of it after it (a sender waits for its receive to be posted, which must
    not lie behind the collective it waits in)."""
    floor = max((i + 1 for i, st in enumerate(steps) if st.collective is not None), default=0)
    at = next((i for i, st in enumerate(steps) if i >= floor and st.run is not None and
               after(st.run)), len(steps))
    while at > floor and steps[at - 1].post:  # the group in front of that action
        at -= 1
    early: list[P2P] = []
    rest: list[Step] = []
    for step in steps[at:]:
        if step.post:
            keep = [p for p in step.post if not (p.op == "recv" and sent_before(p))]
            early += [p for p in step.post if p.op == "recv" and sent_before(p)]
            if keep:
                rest.append(Step(post=tuple(keep)))
        else:
            rest.append(step)
    # the sends of the group in front stay before the pass: their actions ran before it
    front: list[P2P] = []
    while rest and rest[0].post:
        front += [p for p in rest[0].post if p.op == "send"]
        recvs = [p for p in rest[0].post if p.op == "recv"]
        rest = ([Step(post=tuple(recvs))] if recvs else []) + rest[1:]
        if not recvs:
            continue
        break
    group = front + early
    return (steps[:at] + ([Step(post=tuple(group))] if group else []) +
            [Step(collective=what)] + rest)


def vocab_order(schedule: Schedule, order: tuple[tuple[Step, ...], ...],
                events: list[Event], ends: bool = False,
                early: bool = False) -> tuple[tuple[Step, ...], ...]:
    """The posting order with every vocabulary pass joined on every rank: before the first
    action that starts at or after the anchor, or with `early` before the first that ends
    after it (the ranks wait for the anchor's rank instead of it for them)."""
    start = {e.action: e.start for e in events}
    end = {e.action: e.end for e in events}
    ranks = [list(steps) for steps in order]
    for anchor, what in vocab_passes(schedule, events, ends):
        def after(action: Action, anchor=anchor) -> bool:
            return end[action] > anchor if early else start[action] >= anchor

        def sent_before(p: P2P) -> bool:
            m = p.message
            return not after(Action("F" if m.kind == "act" else "B", m.src_stage, m.mb))
        ranks = [_join(steps, what, anchor, after, sent_before) for steps in ranks]
    return tuple(tuple(steps) for steps in ranks)


def runnable_vocab_order(schedule: Schedule, order: tuple[tuple[Step, ...], ...],
                         events: list[Event],
                         check: Callable, ends: bool = False,
                         early: bool = False) -> tuple[tuple[Step, ...], ...]:
    """The posting order with the passes, once `check(schedule, order)` has proved it
    (it raises ScheduleError otherwise)."""
    joined = vocab_order(schedule, order, events, ends, early)
    check(schedule, joined)
    return joined


def searched_vocab_order(schedule: Schedule, order: tuple[tuple[Step, ...], ...],
                         cost: Callable[[Action], float], p2p, check: Callable,
                         simulate: Callable) -> tuple[tuple[Step, ...], ...]:
    """The passes joined one at a time against a simulation of the order so far: O of a
    microbatch at any boundary of the last stage's rank between its forward and its
    backward, each other rank joining before or after its action in progress there, and of
    those that `check` accepts the one whose simulated step ends first (greedy)."""
    base = simulate(schedule, cost, p2p, order=order)
    current = tuple(tuple(steps) for steps in order)
    last = schedule.num_stages - 1
    final = schedule.stage_rank[last]
    rank_of = {x: r for r, row in enumerate(schedule.ranks) for x in row}
    for _, what in vocab_passes(schedule, base.events):
        events = simulate(schedule, cost, p2p, order=current).events
        start = {e.action: e.start for e in events}
        end = {e.action: e.end for e in events}
        if what.op == "E":
            anchors = [start[Action("F", 0, what.mb)]]
        elif what.op == "G":
            anchors = [end[Action("B", 0, what.mb)]]
        else:
            row = [s.run for s in current[final] if s.run is not None]
            a, b = row.index(Action("F", last, what.mb)), row.index(Action("B", last, what.mb))
            anchors = [end[x] for x in row[a:b]]
        best = None
        ranks = range(schedule.num_ranks)
        choices = list(itertools.product((False, True), repeat=len(ranks))) \
            if len(ranks) <= SEARCH_RANKS else [(False,) * len(ranks), (True,) * len(ranks)]
        for anchor in anchors:
            for early in choices:
                def after(action: Action, anchor=anchor, early=early, start=start,
                          end=end) -> bool:
                    if early[rank_of[action]]:
                        return end[action] > anchor
                    return start[action] >= anchor

                def sent_before(p: P2P, after=after) -> bool:
                    m = p.message
                    return not after(Action("F" if m.kind == "act" else "B", m.src_stage,
                                            m.mb))
                candidate = tuple(tuple(_join(list(steps), what, anchor, after, sent_before))
                                  for steps in current)
                try:
                    check(schedule, candidate)
                except ValueError:
                    continue
                t = simulate(schedule, cost, p2p, order=candidate).step_time
                if best is None or t < best[0] - 1e-12:
                    best = (t, candidate)
        if best is None:
            raise ValueError(f"no place for the vocabulary pass {what.op} of microbatch "
                             f"{what.mb} runs under NCCL's rules")
        current = best[1]
    check(schedule, current)
    return current
