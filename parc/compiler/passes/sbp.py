"""sbp: give every value an SBP on each mesh axis by propagating the annotations.

Axes are independent (ND-SBP): each op picks, per axis, one of its catalog signatures. A
signature that needs no conversion of its operands wins (a partial-sum result counts as a
pending all-reduce); otherwise the one with the least boxing traffic, forward and backward,
counting what its results will cost to make whole later. The op records the operand SBPs it
needs (`needs(...)`); the boxing pass inserts the conversions.
"""

from __future__ import annotations

from ...ops.catalog import CATALOG
from ...ops.comm import backward_bytes, boxing_kind, forward_bytes
from ...ops.costs import nbytes
from ...ops.sbp import NdSbp, Sbp
from ...ops.signatures import Signature, signatures
from ..ir import Graph, Op, Value


def _conversion_bytes(src: Sbp, dst: Sbp, size: int, n: int, differentiable: bool) -> float:
    kind = boxing_kind(src, dst)
    if kind is None:
        return 0.0
    # Every conversion costs at least a byte, so a signature that needs none wins a tie.
    return 1.0 + forward_bytes(kind, size, n) + backward_bytes(kind, size, n, differentiable)


def _pending_bytes(sbp: Sbp, size: int, n: int) -> float:
    """What a result's SBP will likely cost to make whole later."""
    return {"P": 2.0 * size * (n - 1), "S": float(size * (n - 1))}.get(sbp.kind, 0.0)


class _AxisChooser:
    def __init__(self, graph: Graph, axis: str, assigned: dict[str, list[tuple[str, Sbp]]]):
        self.graph, self.axis = graph, axis
        self.n = graph.axis_size(axis)
        self.assigned = assigned  # value -> [(axis, sbp)] for the axes done so far

    def local_dim(self, name: str, dim: int, earlier: list[tuple[str, Sbp]]) -> int | None:
        size = self.graph.concrete(self.graph.values[name].type).shape[dim].as_int()
        for axis, sbp in earlier:
            if sbp.kind == "S" and sbp.dim == dim and size is not None:
                size //= self.graph.axis_size(axis)
        return size

    def fits(self, names: tuple[str, ...], sbps: tuple[Sbp, ...],
             earlier: list[list[tuple[str, Sbp]]]) -> bool:
        for name, sbp, before in zip(names, sbps, earlier):
            if sbp.kind == "S":
                size = self.local_dim(name, sbp.dim, before)
                if size is None or size % self.n:
                    return False
        return True

    def choose(self, op: Op, current: list[Sbp], out_earlier) -> Signature:
        g = self.graph
        ins = [g.concrete(g.values[i].type) for i in op.inputs]
        outs = [g.concrete(g.values[o].type) for o in op.outputs]
        spec = CATALOG[op.kind]
        attrs = spec.full_attrs(op.attrs)
        in_earlier = [self.assigned.get(i, []) for i in op.inputs]
        candidates = [
            sig for sig in signatures(op.kind, ins, outs, attrs)
            if self.fits(op.inputs, sig[0], in_earlier)
            and self.fits(op.outputs, sig[1], out_earlier)]
        assert candidates, f"{op.kind} has no signature on {self.axis}"
        out_sizes = [nbytes(t) for t in outs]
        exact = [sig for sig in candidates if list(sig[0]) == current]
        if exact:
            return min(exact, key=lambda sig: sum(
                _pending_bytes(s, size, self.n) for s, size in zip(sig[1], out_sizes)
                if s.kind == "P"))

        def cost(sig: Signature) -> float:
            total = sum(_conversion_bytes(src, dst, nbytes(t), self.n, t.is_float)
                        for src, dst, t in zip(current, sig[0], ins))
            return total + sum(_pending_bytes(s, size, self.n)
                               for s, size in zip(sig[1], out_sizes))
        return min(candidates, key=cost)


def sbp(graph: Graph) -> Graph:
    axes = graph.sbp_axes
    if not axes:
        return graph  # a pure pipeline: every tensor is whole on its stage
    seeds = list(graph.inputs) + [p.name for p in graph.params]
    assigned: dict[str, list[tuple[str, Sbp]]] = {}
    for name in seeds:
        annotation = graph.values[name].sbp or NdSbp(())
        assigned[name] = [(axis, annotation.on(axis)) for axis in axes]
    needs: dict[int, list[list[tuple[str, Sbp]]]] = {}
    for axis_index, axis in enumerate(axes):
        chooser = _AxisChooser(graph, axis, {k: v[:axis_index] for k, v in assigned.items()})
        for index, op in enumerate(graph.ops):
            current = [assigned[i][axis_index][1] for i in op.inputs]
            out_earlier = [assigned.get(o, [])[:axis_index] for o in op.outputs]
            sig_in, sig_out = chooser.choose(op, current, out_earlier)
            needs.setdefault(index, [[] for _ in op.inputs])
            for slot, sbp_in in zip(needs[index], sig_in):
                slot.append((axis, sbp_in))
            for name, sbp_out in zip(op.outputs, sig_out):
                assigned.setdefault(name, []).append((axis, sbp_out))
                chooser.assigned[name] = assigned[name][:axis_index]
    values = {name: Value(v.name, v.type, NdSbp(tuple(assigned.get(name, []))), v.stage)
              for name, v in graph.values.items()}
    ops = []
    for index, op in enumerate(graph.ops):
        required = tuple(NdSbp(tuple(slot)) for slot in needs.get(index, [[] for _ in op.inputs]))
        actual = tuple(values[i].sbp for i in op.inputs)
        ops.append(Op(op.kind, op.inputs, op.outputs, op.attrs, op.scope,
                      None if required == actual else required, op.span))
    return graph.with_(values=values, ops=tuple(ops))

