"""boxing: insert the communication that SBP mismatches imply, and gradient synchronisation.

Forward: wherever an op needs its operand in another SBP, convert it one mesh axis at a time
(all_reduce P->B, reduce_scatter P->S, all_gather S->B, all_to_all S(i)->S(j), slice B->S,
zero_fill B->P, to_partial S->P). A conversion feeding several consumers is made once.

Backward: a replicated (B) float value whose consumers produce split or partial results gets
partial gradients from them; `grad_all_reduce` (identity forward, all-reduce of the gradient
backward) is inserted in front of those consumers. For parameters this is the data-parallel
gradient all-reduce; for activations it is Megatron's all-reduce at the start of a
tensor-parallel region. A value made whole by an all_gather needs none: the all_gather's
backward is a reduce-scatter (ZeRO-style sharded parameters).
"""

from __future__ import annotations

from ...ops.comm import COMMS, boxing_kind
from ...ops.sbp import NdSbp
from ..ir import Graph, Op, Value


class _Builder:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.values = dict(graph.values)
        numeric = [int(n) for n in graph.values if n.isdigit()]
        self.next_id = max(numeric, default=-1) + 1

    def fresh(self, like: Value, sbp: NdSbp) -> str:
        name = str(self.next_id)
        self.next_id += 1
        self.values[name] = Value(name, like.type, sbp, like.stage)
        return name


def _convert(builder: _Builder, name: str, target: NdSbp, consumer: Op, out: list[Op]) -> str:
    """Emit ops turning %name into SBP `target`, one axis at a time; return the new name."""
    current = builder.values[name]
    for axis in builder.graph.sbp_axes:
        src, dst = current.sbp.on(axis), target.on(axis)
        kind = boxing_kind(src, dst)
        if kind is None:
            continue
        sbp = NdSbp(tuple((a, dst if a == axis else current.sbp.on(a))
                          for a in builder.graph.sbp_axes))
        new = builder.fresh(current, sbp)
        out.append(Op(kind, (current.name,), (new,), (("axis", axis),), consumer.scope, None,
                      consumer.span))
        current = builder.values[new]
    return current.name


def _forward(graph: Graph, builder: _Builder) -> list[Op]:
    ops: list[Op] = []
    made: dict[tuple[str, NdSbp], str] = {}
    for op in graph.ops:
        if op.in_sbp is None:
            ops.append(op)
            continue
        inputs = []
        for name, need in zip(op.inputs, op.in_sbp):
            if builder.values[name].sbp == need:
                inputs.append(name)
                continue
            key = (name, need)
            if key not in made:
                made[key] = _convert(builder, name, need, op, ops)
            inputs.append(made[key])
        ops.append(Op(op.kind, tuple(inputs), op.outputs, op.attrs, op.scope, None, op.span))
    return ops


# Replicated ops that are linear in their operand: a partial gradient passes through them
# unchanged, so the all-reduce is deferred to their operand and merges with its other uses.
TRANSPARENT = {"transpose", "reshape", "split_heads", "merge_heads", "split", "scale"}


def _partial_axes(values: dict[str, Value], op: Op, axes, passed: dict[str, set]) -> set[str]:
    """The axes on which `op` hands its replicated operand a partial gradient."""
    if op.kind in COMMS:
        return set(axes) if op.kind in ("slice", "zero_fill") else set()
    found = set()
    for axis in axes:
        outs = [values[o].sbp.on(axis) for o in op.outputs]
        if any(s.kind in ("S", "P") for s in outs):
            found.add(axis)
        elif op.kind in TRANSPARENT and any(axis in passed.get(o, ()) for o in op.outputs):
            found.add(axis)
    return found


def _gradient_sync(graph: Graph, builder: _Builder, ops: list[Op]) -> list[Op]:
    values = builder.values
    producers = {out: op for op in ops for out in op.outputs}
    # Walk backwards: which axes each value's gradient arrives partial on, and which of those
    # an all-reduce must fix here rather than upstream.
    passed: dict[str, set] = {}  # value -> axes its partial gradient passes to its operand
    groups: dict[str, dict[tuple[str, ...], list[int]]] = {}
    for index in reversed(range(len(ops))):
        op = ops[index]
        for name in dict.fromkeys(op.inputs):
            value = values[name]
            producer = producers.get(name)
            if not value.type.is_float or op.kind in ("all_gather", "grad_all_reduce"):
                continue
            replicated = [a for a in graph.sbp_axes if value.sbp.on(a).kind == "B"]
            axes = _partial_axes(values, op, replicated, passed)
            axes = {a for a in axes if not (producer is not None and
                                            producer.kind == "all_gather" and
                                            producer.attr("axis") == a)}
            if producer is not None and producer.kind in TRANSPARENT:
                prod_in = values[producer.inputs[0]].sbp
                moved = {a for a in axes if prod_in.on(a).kind == "B"}
                passed.setdefault(name, set()).update(moved)
                axes -= moved
            if axes:
                key = tuple(a for a in graph.sbp_axes if a in axes)
                groups.setdefault(name, {}).setdefault(key, []).append(index)
    inserts: dict[int, list[Op]] = {}  # op index -> grad ops to emit before it
    rename: dict[tuple[int, str], str] = {}  # (op index, operand) -> synced name
    for name, by_axes in groups.items():
        for axes, members in by_axes.items():
            first = min(members)
            current = name
            for axis in axes:
                new = builder.fresh(values[current], values[current].sbp)
                inserts.setdefault(first, []).append(
                    Op("grad_all_reduce", (current,), (new,), (("axis", axis),),
                       ops[first].scope, None, ops[first].span))
                current = new
            for index in members:
                rename[(index, name)] = current
    out: list[Op] = []
    for index, op in enumerate(ops):
        out.extend(inserts.get(index, []))
        if any((index, i) in rename for i in op.inputs):
            op = Op(op.kind, tuple(rename.get((index, i), i) for i in op.inputs), op.outputs,
                    op.attrs, op.scope, op.in_sbp, op.span)
        out.append(op)
    return out


def boxing(graph: Graph) -> Graph:
    builder = _Builder(graph)
    ops = _forward(graph, builder)
    ops = _gradient_sync(graph, builder, ops)
    return graph.with_(values=builder.values, ops=tuple(ops))
