"""The Schedule: per rank, an ordered list of actions, and the p2p messages they imply."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Action:
    op: str  # "F" forward, "B" backward (input gradient only when split), "W" weight gradient
    stage: int
    mb: int

    def __str__(self) -> str:
        return f"{self.op}{self.stage}.{self.mb}"


@dataclass(frozen=True)
class Message:
    """A tensor one action sends to another rank: activations forward, gradients backward."""

    kind: str  # "act" or "grad"
    src_stage: int
    dst_stage: int
    mb: int


@dataclass(frozen=True)
class Schedule:
    family: str
    num_ranks: int
    num_stages: int
    num_microbatches: int
    stage_rank: tuple[int, ...]  # stage -> the rank that runs it
    paths: tuple[tuple[int, ...], ...]  # per microbatch: the stages it visits, in order
    split_backward: bool  # B computes input gradients only and W the weight gradients
    ranks: tuple[tuple[Action, ...], ...]
    forward_only: bool = False
    # the posting order holds sends that skip stages one group longer (posting.py)
    hold_hops: bool = False

    def next_stage(self, stage: int, mb: int) -> int | None:
        path = self.paths[mb]
        i = path.index(stage)
        return path[i + 1] if i + 1 < len(path) else None

    def prev_stage(self, stage: int, mb: int) -> int | None:
        path = self.paths[mb]
        i = path.index(stage)
        return path[i - 1] if i > 0 else None

    def expected_actions(self) -> set[Action]:
        ops = ("F",) if self.forward_only else ("F", "B", "W") if self.split_backward else (
            "F", "B")
        return {Action(op, s, m) for m, path in enumerate(self.paths) for s in path for op in ops}

    def sends(self, action: Action) -> Message | None:
        """The message an action sends to another rank after it runs, if any."""
        if action.op == "F":
            nxt = self.next_stage(action.stage, action.mb)
            if nxt is not None and self.stage_rank[nxt] != self.stage_rank[action.stage]:
                return Message("act", action.stage, nxt, action.mb)
        elif action.op == "B":
            prev = self.prev_stage(action.stage, action.mb)
            if prev is not None and self.stage_rank[prev] != self.stage_rank[action.stage]:
                return Message("grad", action.stage, prev, action.mb)
        return None

    def receives(self, action: Action) -> Message | None:
        """The message an action needs from another rank before it runs, if any."""
        if action.op == "F":
            prev = self.prev_stage(action.stage, action.mb)
            if prev is not None and self.stage_rank[prev] != self.stage_rank[action.stage]:
                return Message("act", prev, action.stage, action.mb)
        elif action.op == "B":
            nxt = self.next_stage(action.stage, action.mb)
            if nxt is not None and self.stage_rank[nxt] != self.stage_rank[action.stage]:
                return Message("grad", nxt, action.stage, action.mb)
        return None

    def dependencies(self, action: Action) -> list[Action]:
        """The actions that must finish before this one (on any rank)."""
        s, m = action.stage, action.mb
        if action.op == "F":
            prev = self.prev_stage(s, m)
            return [Action("F", prev, m)] if prev is not None else []
        if action.op == "B":
            nxt = self.next_stage(s, m)
            return [Action("F", s, m)] + ([Action("B", nxt, m)] if nxt is not None else [])
        return [Action("B", s, m)]


def full_paths(num_stages: int, num_microbatches: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(range(num_stages)) for _ in range(num_microbatches))
