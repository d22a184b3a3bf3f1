"""The dataflow IR: Values, Ops and the Graph, with one printed form that parses back.

    graph gpt mesh(pp=2, dp=2) batch=4
    input %tokens: i64[batch, 16] {S(0)@dp}
    param %embed.wte: f32[64, 32] {B@dp} init normal(0.02)
    %2: f32[batch, 16, 32] {S(0)@dp, stage=0} = embedding(%tokens, %embed.wte) @embed  # g.par:9:3
    output loss = %40

Shapes are logical (global); `{...}` holds the SBP per mesh axis and the pipeline stage.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from ..dsl.ast import Span
from ..ops.catalog import CATALOG, ShapeError
from ..ops.comm import COMMS
from ..ops.sbp import NdSbp
from ..ops.types import TensorT


@functools.lru_cache(maxsize=65536)  # costs bind the same few types again and again
def _bound(type_: TensorT, bindings: tuple[tuple[str, int], ...]) -> TensorT:
    env = dict(bindings)
    return TensorT(type_.dtype, tuple(d.subs(env) for d in type_.shape))


def _span():
    return field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorT
    sbp: NdSbp | None = None
    stage: int | None = None


@dataclass(frozen=True)
class Op:
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, object], ...] = ()
    scope: str = ""
    in_sbp: tuple[NdSbp, ...] | None = None  # operand SBPs the op needs, until boxing meets them
    span: Span | None = _span()

    def attr(self, name: str, default=None):
        return dict(self.attrs).get(name, default)


@dataclass(frozen=True)
class Param:
    name: str
    init: tuple[str, tuple[float, ...]]


@dataclass(frozen=True)
class Graph:
    name: str
    mesh: tuple[tuple[str, int], ...]
    bindings: tuple[tuple[str, int], ...]  # symbolic dims bound for costs: (("batch", 4),)
    values: dict[str, Value]
    inputs: tuple[str, ...]
    params: tuple[Param, ...]
    ops: tuple[Op, ...]
    outputs: tuple[tuple[str, str], ...]  # (output name, value name)

    @property
    def sbp_axes(self) -> tuple[str, ...]:
        return tuple(axis for axis, _ in self.mesh if axis != "pp")

    def axis_size(self, axis: str) -> int:
        return dict(self.mesh).get(axis, 1)

    def concrete(self, type_: TensorT) -> TensorT:
        """The type with symbolic dims bound (for costs)."""
        return _bound(type_, self.bindings)

    def producers(self) -> dict[str, Op]:
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self) -> dict[str, list[tuple[Op, int]]]:
        uses: dict[str, list[tuple[Op, int]]] = {name: [] for name in self.values}
        for op in self.ops:
            for i, name in enumerate(op.inputs):
                uses.setdefault(name, []).append((op, i))
        return uses

    def with_(self, **changes) -> Graph:
        return replace(self, **changes)


# ---- printing ------------------------------------------------------------------------


def format_attr(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_type(t: TensorT) -> str:
    return f"{t.dtype}[{', '.join(str(d) for d in t.shape)}]"


def format_value(graph: Graph, v: Value) -> str:
    notes = []
    if v.sbp is not None:
        notes += [f"{v.sbp.on(axis)}@{axis}" for axis in graph.sbp_axes]
    if v.stage is not None:
        notes.append(f"stage={v.stage}")
    text = f"%{v.name}: {format_type(v.type)}"
    return text + (" {" + ", ".join(notes) + "}" if notes else "")


def format_ndsbp(graph: Graph, sbp: NdSbp) -> str:
    return ", ".join(f"{sbp.on(axis)}@{axis}" for axis in graph.sbp_axes)


def format_op(graph: Graph, op: Op) -> str:
    outs = ", ".join(format_value(graph, graph.values[o]) for o in op.outputs)
    text = f"{outs} = {op.kind}({', '.join('%' + i for i in op.inputs)})"
    if op.attrs:
        text += " [" + ", ".join(f"{k}={format_attr(v)}" for k, v in op.attrs) + "]"
    if op.in_sbp is not None:
        text += " needs(" + "; ".join(format_ndsbp(graph, s) for s in op.in_sbp) + ")"
    if op.scope:
        text += f" @{op.scope}"
    if op.span is not None:
        text += f"  # {op.span}"
    return text


def print_graph(graph: Graph, scope_filter=None) -> str:
    """The canonical text form. `scope_filter(scope) -> bool` keeps only some ops (not parseable
    back when it drops any)."""
    mesh = ", ".join(f"{a}={n}" for a, n in graph.mesh)
    binds = "".join(f" {k}={v}" for k, v in graph.bindings)
    lines = [f"graph {graph.name} mesh({mesh}){binds}"]
    for name in graph.inputs:
        lines.append("input " + format_value(graph, graph.values[name]))
    for param in graph.params:
        owner = param.name.rsplit(".", 1)[0] if "." in param.name else ""
        if scope_filter is not None and not scope_filter(owner):
            continue
        func, args = param.init
        init = func + (f"({', '.join(repr(a) for a in args)})" if args else "")
        lines.append("param " + format_value(graph, graph.values[param.name]) + f" init {init}")
    for op in graph.ops:
        if scope_filter is None or scope_filter(op.scope):
            lines.append(format_op(graph, op))
    for out, value in graph.outputs:
        lines.append(f"output {out} = %{value}")
    return "\n".join(lines) + "\n"


def result_types(op: Op, ins: list[TensorT]) -> list[TensorT]:
    """What an op's results must be, from its operands' types (ValueError when they do not fit:
    an unknown op, or operands its shape rule rejects)."""
    if op.kind in COMMS:
        return list(ins)
    if op.kind not in CATALOG:
        raise ValueError(f"unknown op kind `{op.kind}`")
    spec = CATALOG[op.kind]
    try:
        return spec.infer(ins, spec.full_attrs(op.attrs))
    except ShapeError as exc:
        raise ValueError(str(exc)) from None
