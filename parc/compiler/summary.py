"""Per-layer figures of a graph: ops, parameters, FLOPs and communication, forward and backward."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ops.catalog import CATALOG
from ..ops.comm import COMMS, backward_bytes, forward_bytes
from ..ops.costs import nbytes, numel, op_cost
from .ir import Graph


@dataclass(frozen=True)
class CommRecord:
    kind: str
    axis: str
    value: str  # the value communicated
    scope: str
    bytes_fwd: float  # total bytes moved over the axis, per microbatch
    bytes_bwd: float
    of_param: bool  # a parameter's gradient: synchronised once per step, not per microbatch


@dataclass
class ScopeSummary:
    scope: str
    ops: int = 0
    params: int = 0
    flops_fwd: int = 0
    flops_bwd: int = 0
    comm_fwd: float = 0.0
    comm_bwd: float = 0.0
    collectives: dict[str, int] = field(default_factory=dict)


def top_scope(scope: str) -> str:
    return scope.split(".", 1)[0] if scope else "(model)"


def communications(graph: Graph) -> list[CommRecord]:
    params = {p.name for p in graph.params}
    origin: dict[str, str] = {}  # value -> the parameter it is an identity of
    records = []
    for op in graph.ops:
        if op.kind not in COMMS:
            continue
        (name,) = op.inputs
        source = origin.get(name, name)
        if op.kind == "grad_all_reduce":
            origin[op.outputs[0]] = source
        value = graph.values[name]
        size = nbytes(graph.concrete(value.type))
        n = graph.axis_size(op.attr("axis"))
        records.append(CommRecord(
            op.kind, op.attr("axis"), name, op.scope, forward_bytes(op.kind, size, n),
            backward_bytes(op.kind, size, n, value.type.is_float), source in params))
    return records


def bytes_per_step(graph: Graph, microbatches: int) -> float:
    """Total bytes moved in one training step: activations once per microbatch, parameter
    gradients once (accumulated over the microbatches first)."""
    total = 0.0
    for r in communications(graph):
        total += (r.bytes_fwd + r.bytes_bwd) * (1 if r.of_param else microbatches)
    return total


def summarize(graph: Graph) -> list[ScopeSummary]:
    rows: dict[str, ScopeSummary] = {}

    def row(scope: str) -> ScopeSummary:
        key = top_scope(scope)
        return rows.setdefault(key, ScopeSummary(key))

    for param in graph.params:
        row(param.name.rsplit(".", 1)[0] if "." in param.name else "").params += numel(
            graph.values[param.name].type)
    for op in graph.ops:
        r = row(op.scope)
        r.ops += 1
        if op.kind in CATALOG:
            ins = [graph.concrete(graph.values[i].type) for i in op.inputs]
            outs = [graph.concrete(graph.values[o].type) for o in op.outputs]
            spec = CATALOG[op.kind]
            attrs = spec.full_attrs(op.attrs)
            cost = op_cost(op.kind, ins, outs, attrs)
            r.flops_fwd += cost.flops_fwd
            r.flops_bwd += sum(g for g, t in zip(cost.flops_bwd, ins) if t.is_float)
    for record in communications(graph):
        r = row(record.scope)
        r.comm_fwd += record.bytes_fwd
        r.comm_bwd += record.bytes_bwd
        key = f"{record.kind}@{record.axis}"
        r.collectives[key] = r.collectives.get(key, 0) + 1
    return list(rows.values())


def model_flops(graph: Graph, microbatches: int) -> float:
    """FLOPs of one training step of the model itself (forward and backward, every op once,
    as if on one device): the numerator of MFU."""
    return microbatches * sum(r.flops_fwd + r.flops_bwd for r in summarize(graph))
