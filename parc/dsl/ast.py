"""AST of a .par file: frozen dataclasses whose source span is left out of equality."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def _span() -> Span | None:
    return field(default=None, compare=False, hash=False, repr=False)


# ---- expressions ------------------------------------------------------------------


@dataclass(frozen=True)
class Int:
    value: int
    span: Span | None = _span()


@dataclass(frozen=True)
class Float:
    value: float
    span: Span | None = _span()


@dataclass(frozen=True)
class Str:
    value: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span | None = _span()


@dataclass(frozen=True)
class Name:
    """A possibly dotted name: `d`, `std.hw.cpu`."""

    parts: tuple[str, ...]
    span: Span | None = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class Call:
    """`f(a, k = b)`, optionally `as name` to name the call's parameter scope."""

    func: Name
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    scope: str | None = None
    span: Span | None = _span()


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * /
    left: Expr
    right: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class List:
    items: tuple[Expr, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Quantity:
    """A setting value with a unit: `80 GB`, `450 GB/s`, `5 us`."""

    value: Expr
    unit: str
    span: Span | None = _span()


Expr = Union[Int, Float, Str, Bool, Name, Call, BinOp, Neg, List, Quantity]


# ---- types --------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorType:
    dtype: str
    dims: tuple[Expr, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class TypePattern:
    """A def parameter's shape pattern: `[*, d]` binds `d`; `*` matches any leading dims."""

    dtype: str | None
    dims: tuple[str | int, ...]  # a name to bind or check, an int, or "*"
    span: Span | None = _span()


# ---- statements ---------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    name: str
    type: TensorType
    source: Expr | None = None  # `= next(tokens)`: the data is another input shifted by one
    span: Span | None = _span()


@dataclass(frozen=True)
class Param:
    name: str
    type: TensorType
    init: Expr | None
    span: Span | None = _span()


@dataclass(frozen=True)
class Assign:
    targets: tuple[str, ...]
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class For:
    var: str
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Output:
    name: str
    value: Expr | None
    span: Span | None = _span()


@dataclass(frozen=True)
class Return:
    values: tuple[Expr, ...]
    span: Span | None = _span()


Stmt = Union[Input, Param, Assign, For, Output, Return]


# ---- top-level items -------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderParam:
    name: str
    default: Expr | None
    span: Span | None = _span()


@dataclass(frozen=True)
class DefParam:
    name: str
    pattern: TypePattern | None
    default: Expr | None
    span: Span | None = _span()


@dataclass(frozen=True)
class Def:
    name: str
    params: tuple[DefParam, ...]
    body: tuple[Stmt, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Model:
    name: str
    params: tuple[HeaderParam, ...]
    body: tuple[Stmt, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Setting:
    key: str
    values: tuple[Expr, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class HardwareDef:
    name: str
    params: tuple[HeaderParam, ...]
    settings: tuple[Setting, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class HardwareInst:
    name: str
    preset: Name
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Use:
    """`use std.gpt` (module) or `use "layers.par"` (a file relative to this one)."""

    module: tuple[str, ...] | None
    path: str | None
    span: Span | None = _span()


@dataclass(frozen=True)
class Checkpoint:
    """`checkpoint every N to "DIR"`."""

    every: Expr
    directory: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Train:
    settings: tuple[Setting | Checkpoint, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class SbpEntry:
    kind: str  # "S", "B", "P" or "auto" (the sbp search chooses)
    dim: int | None
    axis: str | None  # None: every non-pipeline axis
    span: Span | None = _span()

    def __str__(self) -> str:
        text = f"S({self.dim})" if self.kind == "S" else self.kind
        return f"{text}@{self.axis}" if self.axis else text


@dataclass(frozen=True)
class SbpRule:
    patterns: tuple[str, ...]
    entries: tuple[SbpEntry, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class MeshAxis:
    name: str
    size: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class StageItem:
    """`embed`, `block[3]` or `block[0..4]` (a half-open range of loop indices)."""

    name: str
    start: Expr | None
    stop: Expr | None
    span: Span | None = _span()


@dataclass(frozen=True)
class Stage:
    index: int
    items: tuple[StageItem, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Schedule:
    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[Kwarg, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Mesh:
    axes: tuple[MeshAxis, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class SbpBlock:
    rules: tuple[SbpRule, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class StagesAuto:
    span: Span | None = _span()


@dataclass(frozen=True)
class ParallelAuto:
    """`auto`: let `parc tune` choose the mesh, SBP, schedule and microbatches."""

    span: Span | None = _span()


ParallelStmt = Union[Mesh, SbpBlock, StagesAuto, Stage, Schedule, ParallelAuto, Setting]


@dataclass(frozen=True)
class Parallel:
    hardware: str
    body: tuple[ParallelStmt, ...]
    span: Span | None = _span()


Item = Union[Use, HardwareDef, HardwareInst, Def, Model, Train, Parallel]


@dataclass(frozen=True)
class Module:
    file: str
    items: tuple[Item, ...]
