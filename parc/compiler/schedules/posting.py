"""The point-to-point posting order: exactly what each rank's executor posts, and when.

A rank runs its actions in schedule order, in ticks. Before its first tick it posts that tick's
receives; after each tick it posts one group holding what the tick sent and what the next tick
receives (Megatron's and torch's batched send/receive of one step). A group that receives is
waited for before the next tick runs, with every group posted before it (one NCCL stream
completes groups in order); a group of sends alone is left in flight, so a tick that receives
nothing (a weight gradient, the first stage's forward) runs while the message waits for its
receiver (zero-bubble's W fills the bubble only so). A tick is one action, or for orders that
would deadlock so (interleaved 1F1B) a forward and the backward after it. The compiler writes
this order into the program (plan.json) and the executor follows it as written; the validator
proves it under NCCL's rules (validate.py): between two ranks point-to-point operations match
in the order they are posted, tags are ignored, and a group completes as one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .schedule import Action, Message, Schedule


@dataclass(frozen=True, kw_only=True)
class P2P:
    """One message of a group: sent to or received from the rank running `peer_stage`."""

    op: str  # "send" or "recv"
    message: Message
    peer_stage: int

    def __str__(self) -> str:
        m = self.message
        return (f"{self.op} {m.kind} of microbatch {m.mb} (stage {m.src_stage}->"
                f"{m.dst_stage})")


@dataclass(frozen=True, kw_only=True)
class Step:
    """What a rank does next: post a group of p2p operations and wait for it, run an
    action, or join a collective over the pipeline group (a vocabulary pass, vocab.py),
    which every rank must reach in the same order."""

    post: tuple[P2P, ...] = ()
    run: Action | None = None
    collective: Action | None = None


def _group(items: list[P2P], schedule: Schedule) -> tuple[P2P, ...]:
    """A group's operations in a fixed order: by peer rank, sends before receives."""
    if len(items) == 1:
        return (items[0],)
    return tuple(sorted(items, key=lambda p: (schedule.stage_rank[p.peer_stage],
                                              p.op != "send")))


class _Order:
    """Happens-before between actions: each rank's order plus the messages between ranks,
    as a bitset of everything that follows each action (worked out once per schedule)."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule
        actions = [a for rank in schedule.ranks for a in rank]
        self.index = {a: i for i, a in enumerate(actions)}
        after: list[list[int]] = [[] for _ in actions]
        for rank in schedule.ranks:
            for a, b in zip(rank, rank[1:]):
                after[self.index[a]].append(self.index[b])
        for action in actions:
            message = schedule.sends(action)
            if message is not None:
                op = "F" if message.kind == "act" else "B"
                target = Action(op, message.dst_stage, message.mb)
                if target in self.index:
                    after[self.index[action]].append(self.index[target])
        indegree = [0] * len(actions)
        for succ in after:
            for j in succ:
                indegree[j] += 1
        order = [i for i, d in enumerate(indegree) if d == 0]
        for i in order:  # Kahn: the list grows while it is walked
            for j in after[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    order.append(j)
        self.later = [0] * len(actions)  # bit j set: action j happens after action i
        for i in reversed(order):
            bits = 0
            for j in after[i]:
                bits |= (1 << j) | self.later[j]
            self.later[i] = bits

    def follows(self, later: Action, earlier: Action) -> bool:
        return bool(self.later[self.index[earlier]] >> self.index[later] & 1)

    def sender(self, action: Action) -> Action | None:
        """The action on another rank whose message `action` receives."""
        message = self.schedule.receives(action)
        if message is None:
            return None
        return Action("F" if message.kind == "act" else "B", message.src_stage, message.mb)


def ticks(rank: tuple[Action, ...], order: _Order | None) -> list[list[Action]]:
    """A rank's actions cut into ticks that run with no communication between them. Without
    `order` every action is a tick of its own (Megatron's 1F1B: after a forward, send its
    output and receive the next backward's gradient in one group). With it, a forward and a
    backward right after it whose gradient does not wait on that forward form one tick
    (Megatron's interleaved step: one group then carries both sends and both receives). A
    weight gradient is a tick of its own: what the backward before it sends goes out before
    it runs."""
    out: list[list[Action]] = []
    for action in rank:
        last = out[-1] if out else []
        if order is not None and action.op == "B" and len(last) == 1 and last[0].op == "F":
            source = order.sender(action)
            if source is None or not order.follows(source, last[0]):
                last.append(action)
                continue
        out.append([action])
    return out


def candidate_orders(schedule: Schedule) -> Iterator[tuple[tuple[Step, ...], ...]]:
    """The posting orders to try, best first (validate.py keeps the first that NCCL can
    run): one action a tick; the same with sends that no receive follows held back to the
    next group (two ranks that send to each other in groups of their own wait on each other);
    forward-backward pairs. A schedule with `hold_hops` holds the sends of messages that
    skip stages one tick longer in each of them."""
    hold = schedule.hold_hops
    yield posting_order(schedule, paired=False, hold_sends=False, hold_hops=hold)
    yield posting_order(schedule, paired=False, hold_sends=True, hold_hops=hold)
    yield posting_order(schedule, paired=True, hold_sends=False, hold_hops=hold)


def is_hop(message: Message) -> bool:
    """A message that skips stages (or goes against the stage order, a reordered path)."""
    step = message.dst_stage - message.src_stage
    return step != (1 if message.kind == "act" else -1)


def posting_order(schedule: Schedule, paired: bool, hold_sends: bool,
                  hold_hops: bool = False) -> tuple[tuple[Step, ...], ...]:
    """Every rank's steps: after each tick one group of what it sends and what the next tick
    receives. With `hold_hops` a send that skips stages
    goes out one group later, as does every later send to that rank before it (messages to
    a rank keep their order): its receiver, a stage further on, is ready about a tick later,
    and the sender goes on meanwhile instead of waiting for it."""
    out = []
    order = _Order(schedule) if paired else None
    for rank in schedule.ranks:
        steps: list[Step] = []
        pending: list[P2P] = []
        held: list[P2P] = []  # sends kept for the group after the next
        for tick in ticks(rank, order):
            for action in tick:
                needs = schedule.receives(action)
                if needs is not None:
                    pending.append(P2P(op="recv", message=needs, peer_stage=needs.src_stage))
            if pending and not (hold_sends and all(p.op == "send" for p in pending)):
                steps.append(Step(post=_group(pending, schedule)))
                pending = []
            pending += held
            held = []
            for action in tick:
                steps.append(Step(run=action))
                sent = schedule.sends(action)
                if sent is None:
                    continue
                p2p = P2P(op="send", message=sent, peer_stage=sent.dst_stage)
                peer = schedule.stage_rank[sent.dst_stage]
                if hold_hops and (is_hop(sent) or any(
                        schedule.stage_rank[h.peer_stage] == peer for h in held)):
                    held.append(p2p)
                else:
                    pending.append(p2p)
        pending += held
        if pending:
            steps.append(Step(post=_group(pending, schedule)))
        out.append(tuple(steps))
    return tuple(out)


def order_json(order: tuple[tuple[Step, ...], ...]) -> list[list[dict]]:
    """The order as plain data for plan.json."""
    def item(p: P2P) -> list:
        m = p.message
        return [p.op, m.kind, m.src_stage, m.dst_stage, m.mb]

    return [[{"run": [s.run.op, s.run.stage, s.run.mb]} if s.run is not None
             else {"collective": [s.collective.op, s.collective.mb]}
             if s.collective is not None
             else {"post": [item(p) for p in s.post]} for s in rank] for rank in order]
