"""The JSON form of the IR, for tools; `graph_from_json(graph_to_json(g)) == g`."""

from __future__ import annotations

from ..dsl.ast import Span
from ..ops.dims import Dim
from ..ops.sbp import NdSbp, Sbp
from ..ops.types import TensorT
from .ir import Graph, Op, Param, Value


def _sbp_json(sbp: NdSbp | None):
    if sbp is None:
        return None
    return {axis: str(s) for axis, s in sbp.axes}


def _sbp_from(data) -> NdSbp | None:
    if data is None:
        return None
    out = []
    for axis, text in data.items():
        out.append((axis, Sbp("S", int(text[2:-1])) if text.startswith("S(") else Sbp(text)))
    return NdSbp(tuple(out))


def _attr_json(value):
    if isinstance(value, Dim):
        return str(value)
    if isinstance(value, tuple | list):
        return [_attr_json(v) for v in value]
    return value


def graph_to_json(graph: Graph) -> dict:
    def value(name: str) -> dict:
        v = graph.values[name]
        return {"name": name, "dtype": v.type.dtype, "shape": [str(d) for d in v.type.shape],
                "sbp": _sbp_json(v.sbp), "stage": v.stage}

    return {
        "name": graph.name,
        "mesh": dict(graph.mesh),
        "bindings": dict(graph.bindings),
        "inputs": [value(n) for n in graph.inputs],
        "params": [{**value(p.name), "init": [p.init[0], list(p.init[1])]}
                   for p in graph.params],
        "ops": [{"kind": op.kind, "inputs": list(op.inputs),
                 "outputs": [value(o) for o in op.outputs],
                 "attrs": {k: _attr_json(v) for k, v in op.attrs}, "scope": op.scope,
                 "needs": [_sbp_json(s) for s in op.in_sbp] if op.in_sbp else None,
                 "span": str(op.span) if op.span else None}
                for op in graph.ops],
        "outputs": {out: name for out, name in graph.outputs},
    }


def _dim(text: str) -> Dim:
    from .ir_parse import _dim as parse_dim
    from .ir_parse import _Line

    line = _Line(text, 0)
    return parse_dim(line)


def graph_from_json(data: dict) -> Graph:
    values: dict[str, Value] = {}

    def value(d: dict) -> str:
        type_ = TensorT(d["dtype"], tuple(_dim(s) for s in d["shape"]))
        values[d["name"]] = Value(d["name"], type_, _sbp_from(d["sbp"]), d["stage"])
        return d["name"]

    inputs = tuple(value(d) for d in data["inputs"])
    params = tuple(Param(value(d), (d["init"][0], tuple(d["init"][1]))) for d in data["params"])
    ops = []
    for d in data["ops"]:
        outs = tuple(value(o) for o in d["outputs"])
        attrs = tuple((k, tuple(Dim.of(int(x)) if isinstance(x, str) else x for x in v)
                       if isinstance(v, list) else v) for k, v in d["attrs"].items())
        needs = tuple(_sbp_from(s) for s in d["needs"]) if d["needs"] else None
        span = None
        if d["span"]:
            file, line, col = d["span"].rsplit(":", 2)
            span = Span(file, int(line), int(col), int(line), int(col))
        ops.append(Op(d["kind"], tuple(d["inputs"]), outs, attrs, d["scope"], needs, span))
    return Graph(data["name"], tuple(data["mesh"].items()), tuple(data["bindings"].items()),
                 values, inputs, params, tuple(ops), tuple(data["outputs"].items()))
