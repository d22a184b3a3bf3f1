"""Values the checker computes while it elaborates a model."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ops.dims import Dim
from ..ops.types import TensorT
from .ast import Span

MAX_OPS = 1_000_000


class _Poison:
    """The value of an expression that already produced a diagnostic: silences follow-on errors."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "POISON"


POISON = _Poison()


@dataclass(frozen=True)
class Tensor:
    id: int
    type: TensorT


Value = Dim | float | bool | str | Tensor | tuple | list | _Poison


def describe(value: Value) -> str:
    """A short phrase naming a value's kind, for messages."""
    if isinstance(value, Tensor):
        return f"a tensor {value.type}"
    if isinstance(value, Dim):
        return f"the integer {value}" if value.is_int else f"the dimension {value}"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the number {value:g}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, tuple):
        return f"{len(value)} values"
    if isinstance(value, list):
        return "a list"
    return "an invalid value"


class Abort(Exception):
    """Elaboration cannot go on (a size limit); the diagnostic is already recorded."""


@dataclass
class Frame:
    """One model body or inlined def call."""

    module: str
    scope: str  # parameter scope path of this frame ("" for the model)
    env: dict[str, Value]
    is_model: bool
    loop_index: list[int] = field(default_factory=list)
    used_scopes: dict[str, Span | None] = field(default_factory=dict)
    depth: int = 0
    returned: tuple | None = None
