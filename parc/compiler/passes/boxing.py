"""boxing: insert the communication that SBP mismatches imply, and gradient synchronisation.

Forward: wherever an op needs its operand in another SBP, convert it one mesh axis at a time
(all_reduce P->B, reduce_scatter P->S, all_gather S->B, all_to_all S(i)->S(j), slice B->S,
zero_fill B->P, to_partial S->P). A dim split over several axes is cut outer axis first (the
runtime's shard order), so splits are undone innermost first and made outermost first. A
conversion feeding several consumers is made once.

Backward: the gradient of a replicated (B) float value is either whole on every rank or a
partial sum over the axis. A consumer whose results are split or partial on the axis hands
its replicated operand a partial gradient; one whose results are replicated hands it a whole
one. Partial gradients may travel on through ops that are linear in their operand (transpose,
reshape, ...) and end in an all_gather, whose backward then sums and scatters them
(`grad=partial`: ZeRO's reduce-scatter), or at a parameter, whose gradient is then
all-reduced. Everywhere else, and wherever whole and partial gradients would meet,
`grad_all_reduce` (identity forward, all-reduce of the gradient backward) is inserted in front
of the consumers that hand out partial ones: the data-parallel gradient all-reduce for
parameters, Megatron's all-reduce at the start of a tensor-parallel region for activations.
An all_gather whose result gets a whole gradient keeps its slice of it (`grad=whole`).
"""

from __future__ import annotations

from ...ops.comm import COMMS, boxing_kind
from ...ops.sbp import BROADCAST, NdSbp, Sbp
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


def _splitters(sbp: NdSbp, axes: tuple[str, ...], dim: int) -> list[str]:
    return [a for a in axes if sbp.on(a) == Sbp("S", dim)]


def _conversion_plan(src: NdSbp, dst: NdSbp, axes: tuple[str, ...]) -> list[tuple[str, Sbp]]:
    """(axis, SBP after) steps turning src into dst with the runtime's shard order kept.

    A dim's local block follows the axes that split it, outer first (mixed radix). Only the
    innermost splitter can be removed in place (a gather of neighbouring blocks) and a new
    splitter only added innermost, so the axes past the common prefix of the source and
    target splitters are undone innermost first, and the target's made outermost first."""
    current = {a: src.on(a) for a in axes}
    steps: list[tuple[str, Sbp]] = []
    dims = {s.dim for s in list(current.values()) + [dst.on(a) for a in axes] if s.kind == "S"}
    undo: set[str] = set()
    for dim in dims:
        before, after = _splitters(src, axes, dim), _splitters(dst, axes, dim)
        keep = 0
        while keep < min(len(before), len(after)) and before[keep] == after[keep]:
            keep += 1
        undo.update(before[keep:])
    shared = {d for d in dims if len(set(_splitters(src, axes, d)) |
                                     set(_splitters(dst, axes, d))) > 1}
    for axis in reversed(axes):  # undo splits, innermost first
        if axis not in undo:
            continue
        was, want = current[axis], dst.on(axis)
        if want.kind == "S" and want != was and was.dim not in shared and want.dim not in shared:
            steps.append((axis, want))  # all_to_all in one step
        elif want.kind == "P" and was.dim not in shared:
            steps.append((axis, want))  # to_partial
        else:
            steps.append((axis, BROADCAST))  # all_gather
        current[axis] = steps[-1][1]
    for axis in axes:  # make the rest, outermost first
        if current[axis] != dst.on(axis):
            steps.append((axis, dst.on(axis)))
            current[axis] = dst.on(axis)
    return steps


def _convert(builder: _Builder, name: str, target: NdSbp, consumer: Op, out: list[Op]) -> str:
    """Emit ops turning %name into SBP `target`; return the new name."""
    axes = builder.graph.sbp_axes
    current = builder.values[name]
    for axis, dst in _conversion_plan(current.sbp, target, axes):
        kind = boxing_kind(current.sbp.on(axis), dst)
        sbp = NdSbp(tuple((a, dst if a == axis else current.sbp.on(a)) for a in axes))
        new = builder.fresh(current, sbp)
        out.append(Op(kind, (current.name,), (new,), (("axis", axis),), consumer.scope, None,
                      consumer.span))
        current = builder.values[new]
    assert current.sbp == target, (current.sbp, target)
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
# (Communication on another axis is linear on this one too.)
TRANSPARENT = {"transpose", "reshape", "split_heads", "merge_heads", "split", "scale",
               "dropout"}


def _linear_on(op: Op, axis: str) -> bool:
    return op.kind in TRANSPARENT or (op.kind in COMMS and op.attr("axis") != axis)


class _Gradients:
    """Per replicated float value and axis: does its gradient arrive partial or whole?"""

    def __init__(self, graph: Graph, values: dict[str, Value], ops: list[Op]):
        self.values, self.ops, self.axes = values, ops, graph.sbp_axes
        self.sources = [p.name for p in graph.params] + list(graph.inputs)
        self.producer = {out: op for op in ops for out in op.outputs}
        self.consumers: dict[str, list[int]] = {}
        for index, op in enumerate(ops):
            for name in dict.fromkeys(op.inputs):
                self.consumers.setdefault(name, []).append(index)
        self.partial: set[tuple[str, str]] = set()  # (value, axis): its gradient is partial
        self.syncs: dict[str, dict[int, list[str]]] = {}  # value -> consumer -> axes to sum

    def tracked(self, name: str, axis: str) -> bool:
        value = self.values[name]
        return value.type.is_float and value.sbp.on(axis).kind == "B"

    def hands_partial(self, index: int, axis: str) -> bool:
        """Whether op `index` gives its replicated operand a partial gradient on `axis`."""
        op = self.ops[index]
        if op.kind in COMMS and op.attr("axis") == axis:
            return op.kind in ("slice", "zero_fill")
        if any(self.values[o].sbp.on(axis).kind in "SP" for o in op.outputs):
            return True
        if _linear_on(op, axis):
            used = [o for o in op.outputs if self.tracked(o, axis) and self.consumers.get(o)]
            return bool(used) and all((o, axis) in self.partial for o in used)
        return False

    def all_partial(self, name: str, axis: str) -> bool:
        users = self.consumers.get(name, [])
        return bool(users) and all(self.hands_partial(i, axis) for i in users)

    def settle(self, name: str, axis: str) -> None:
        """Decide how `name`'s gradient arrives, once every consumer's results are settled."""
        users = self.consumers.get(name, [])
        partial = [i for i in users if self.hands_partial(i, axis)]
        if not partial:
            return
        producer = self.producer.get(name)
        if len(partial) == len(users) and producer is not None and (
                _linear_on(producer, axis) or (producer.kind == "all_gather" and
                                               producer.attr("axis") == axis)):
            siblings = [o for o in producer.outputs if o != name and self.tracked(o, axis)
                        and self.consumers.get(o)]
            if all(self.all_partial(o, axis) for o in siblings):
                self.partial.add((name, axis))  # it travels on to the producer's operand
                return
        # made whole where it is handed out (for a parameter: its gradient all-reduce)
        for index in partial:
            self.syncs.setdefault(name, {}).setdefault(index, []).append(axis)

    def run(self) -> None:
        order = [name for op in reversed(self.ops) for name in reversed(op.outputs)]
        order += self.sources
        for name in dict.fromkeys(order):
            for axis in self.axes:
                if self.tracked(name, axis):
                    self.settle(name, axis)


def _gradient_sync(graph: Graph, builder: _Builder, ops: list[Op]) -> list[Op]:
    values = builder.values
    grads = _Gradients(graph, values, ops)
    grads.run()
    inserts: dict[int, list[Op]] = {}  # op index -> grad ops to emit before it
    rename: dict[tuple[int, str], str] = {}  # (op index, operand) -> synced name
    for name, by_consumer in grads.syncs.items():
        chains: dict[tuple[str, ...], list[int]] = {}
        for index, axes in by_consumer.items():
            key = tuple(a for a in graph.sbp_axes if a in axes)
            chains.setdefault(key, []).append(index)
        for axes, members in chains.items():
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
        if op.kind == "all_gather" and values[op.inputs[0]].type.is_float:
            partial = (op.outputs[0], op.attr("axis")) in grads.partial
            op = Op(op.kind, op.inputs, op.outputs,
                    op.attrs + (("grad", "partial" if partial else "whole"),), op.scope,
                    op.in_sbp, op.span)
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

