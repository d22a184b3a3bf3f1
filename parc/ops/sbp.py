"""SBP values: how a tensor lies over each mesh axis (Split along a dim, Broadcast, Partial-sum)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sbp:
    kind: str  # "S", "B" or "P"
    dim: int | None = None

    def __post_init__(self):
        assert self.kind in ("S", "B", "P"), self.kind
        assert (self.dim is not None) == (self.kind == "S"), "only S carries a dim"

    def __str__(self) -> str:
        return f"S({self.dim})" if self.kind == "S" else self.kind


BROADCAST = Sbp("B")
PARTIAL = Sbp("P")


@dataclass(frozen=True)
class NdSbp:
    """One Sbp per mesh axis (the pipeline axis excluded), in mesh order."""

    axes: tuple[tuple[str, Sbp], ...]

    def on(self, axis: str) -> Sbp:
        return dict(self.axes).get(axis, BROADCAST)

    def __str__(self) -> str:
        return ", ".join(f"{sbp}@{axis}" for axis, sbp in self.axes) or "B"
