"""sbp: give every value an SBP on each mesh axis by propagating the annotations.

Axes are independent (ND-SBP): each op picks, per axis, one of its catalog signatures. A
signature that needs no conversion of its operands wins (a partial-sum result counts as a
pending all-reduce). Otherwise the cheapest in time on the declared hardware: the boxing its
operands need, forward and backward, as alpha-beta on the axis's link; the op's own compute
(an op replicated over the axis does its FLOPs on every rank of it, a split one 1/n); and what
its results will cost later: a partial sum's all-reduce, a split made here its gather, and a
split given up here (results whole where an operand was split) the replicated compute of
everything after it. Propagating a split (a batch split above all) costs nothing later, so
data parallelism is never switched off to save bytes. The op records the operand SBPs it
needs (`needs(...)`); the boxing pass inserts the conversions.

On the axis of `sequence_parallel` (Megatron's sequence parallelism) two rules narrow the
choice first: a split weight stays split, and a [batch, seq, width] result is split by
sequence wherever a signature allows it, never whole or partial. The row-parallel matmul's
partial sum is then reduce-scattered by sequence and the column-parallel matmul's input
gathered, and the norms, dropouts and residual adds between them run on 1/n of the rows.
"""

from __future__ import annotations

from ...ops.catalog import CATALOG
from ...ops.comm import boxing_kind
from ...ops.costs import nbytes
from ...ops.sbp import NdSbp, Sbp
from ...ops.signatures import Signature, context_signatures, signatures
from ..ir import Graph, Op, Value
from ..links import axis_link
from .context import PassContext
from .sbp_costs import Types, op_flops, transfer_time
from .sbp_search import apply, search


class _AxisChooser:
    def __init__(self, graph: Graph, axis: str, assigned: dict[str, list[tuple[str, Sbp]]],
                 context: PassContext, later_flops: list[float], types: Types):
        self.graph, self.axis, self.types = graph, axis, types
        self.n = graph.axis_size(axis)
        self.assigned = assigned  # value -> [(axis, sbp)] for the axes done so far
        hw = context.hardware
        peak = hw.flops_bf16 if context.precision == "bf16" else hw.flops_f32
        self.flop_rate = peak * hw.efficiency
        self.bandwidth, self.latency = axis_link(graph.mesh, hw, axis)
        self.later_flops = later_flops  # FLOPs of every op after each op
        self.sequence = axis == context.sequence_parallel
        self.context = axis == context.context_parallel

    def local_dim(self, name: str, dim: int, earlier: list[tuple[str, Sbp]]) -> int | None:
        size = self.types[name].shape[dim].as_int()
        for axis, sbp in earlier:
            if sbp.kind == "S" and sbp.dim == dim and size is not None:
                size //= self.graph.axis_size(axis)
        return size

    def fits(self, names: tuple[str, ...], sbps: tuple[Sbp, ...],
             earlier: list[list[tuple[str, Sbp]]]) -> bool:
        for name, sbp, before in zip(names, sbps, earlier):
            if sbp.kind == "S":
                size = self.local_dim(name, sbp.dim, before)
                # the context axis cuts a dim into 2n chunks (the causal load balance)
                if size is None or size % (2 * self.n if self.context else self.n):
                    return False
        return True

    def ways(self, earlier: list[tuple[str, Sbp]]) -> int:
        """How many ways the axes done so far divide a tensor (or an op's work)."""
        out = 1
        for axis, sbp in earlier:
            if sbp.kind in "SP":
                out *= self.graph.axis_size(axis)
        return out

    def transfer(self, kind: str | None, size: float, differentiable: bool) -> float:
        """Seconds of a conversion, forward and its backward image, on this axis's link."""
        if kind is None:
            return 0.0
        # every conversion costs something, so a signature that needs none wins a tie
        return 1e-12 + transfer_time(kind, size, differentiable, self.n, self.bandwidth,
                                     self.latency)

    def choose(self, index: int, op: Op, current: list[Sbp], out_earlier) -> Signature:
        ins = [self.types[i] for i in op.inputs]
        outs = [self.types[o] for o in op.outputs]
        spec = CATALOG[op.kind]
        attrs = spec.full_attrs(op.attrs)
        in_earlier = [self.assigned.get(i, []) for i in op.inputs]
        every = signatures(op.kind, ins, outs, attrs)
        if self.context:
            every = every + context_signatures(op.kind, ins)
        candidates = [
            sig for sig in every
            if self.fits(op.inputs, sig[0], in_earlier)
            and self.fits(op.outputs, sig[1], out_earlier)]
        assert candidates, f"{op.kind} has no signature on {self.axis}"
        split: list[Signature] = []
        if self.sequence:
            candidates, split = self.sequence_split(op, current, candidates)
        if self.context:
            candidates = self.context_split(op, candidates)
        out_sizes = [nbytes(t) / self.ways(e) for t, e in zip(outs, out_earlier)]
        exact = [sig for sig in candidates if list(sig[0]) == current]
        if exact:
            return min(exact, key=lambda sig: self.pending(index, sig, current, out_sizes))
        candidates = split or candidates
        flops = op_flops(self.types, op) / self.ways(out_earlier[0] if out_earlier else [])

        def cost(sig: Signature) -> float:
            total = sum(self.transfer(boxing_kind(src, dst), nbytes(t) / self.ways(e),
                                      t.is_float)
                        for src, dst, t, e in zip(current, sig[0], ins, in_earlier))
            whole = all(s.kind == "B" for s in sig[1])
            total += flops / (1 if whole else self.n) / self.flop_rate
            return total + self.pending(index, sig, current, out_sizes)
        return min(candidates, key=cost)

    def sequence_split(self, op: Op, current: list[Sbp], candidates: list[Signature]
                       ) -> tuple[list[Signature], list[Signature]]:
        """Megatron's sequence parallelism on this axis: the weights keep their split (the
        activations move into a tensor-parallel region, not the weights out of it), and the
        residual stream, a [batch, seq, width] value, is neither whole nor a partial sum
        where it can be split by sequence (a row-parallel result is reduce-scattered before
        its bias, dropout or residual add): (the signatures left, those that split every
        stream result by sequence)."""
        def weight_moved(sig: Signature) -> bool:
            return any(now.kind == "S" and now != want and self.weight(name)
                       for name, now, want in zip(op.inputs, current, sig[0]))
        candidates = [sig for sig in candidates if not weight_moved(sig)] or candidates
        streams = [k for k, name in enumerate(op.outputs) if self.stream(name)]
        if not streams:
            return candidates, []
        split = [sig for sig in candidates if all(sig[1][k] == SEQUENCE for k in streams)]
        if split:
            candidates = [sig for sig in candidates
                          if not any(sig[1][k].kind in "BP" for k in streams)]
        return candidates, split

    def context_split(self, op: Op, candidates: list[Signature]) -> list[Signature]:
        """Context parallelism on this axis: every batched float result is split by its
        sequence dim wherever a signature allows it (the whole model runs on the rank's
        share of the sequence; attention by ring)."""
        dims = [(k, sequence_dim(self.graph.values[name].type))
                for k, name in enumerate(op.outputs)]
        dims = [(k, d) for k, d in dims if d is not None]
        if not dims:
            return candidates
        split = [sig for sig in candidates if all(sig[1][k] == Sbp("S", d) for k, d in dims)]
        return split or candidates

    def weight(self, name: str) -> bool:
        """A value with no batch dim: a parameter or what is made of parameters alone."""
        return not any(_batched(d) for d in self.graph.values[name].type.shape)

    def stream(self, name: str) -> bool:
        """A float [batch, seq, width] value: the residual stream and what is like it."""
        t = self.graph.values[name].type
        return t.is_float and t.rank == 3 and _batched(t.shape[0])

    def pending(self, index: int, sig: Signature, current: list[Sbp],
                out_sizes: list[float]) -> float:
        """Seconds the results' SBP will likely cost later."""
        split_in = any(s.kind == "S" for s in current)
        total = 0.0
        for s, size in zip(sig[1], out_sizes):
            if s.kind == "P":  # an all-reduce
                total += self.transfer("all_reduce", size, False)
            elif s.kind == "S" and not split_in:  # a split made here: a gather, likely
                total += self.transfer("all_gather", size, False)
        if split_in and all(s.kind == "B" for s in sig[1]):
            # the split is given up: everything after runs replicated
            total += self.later_flops[index] * (1 - 1 / self.n) / self.flop_rate
        return total


SEQUENCE = Sbp("S", 1)  # the sequence dim of a [batch, seq, width] value


def sequence_dim(t) -> int | None:
    """The sequence dim of a batched float activation: [batch, seq, width] or split into
    heads, [batch, heads, seq, head_dim]."""
    if not (t.is_float and t.rank in (3, 4) and _batched(t.shape[0])):
        return None
    return t.rank - 2


def _batched(dim) -> bool:
    return "batch" in str(dim)


def _later_flops(graph: Graph, types: Types) -> list[float]:
    out = [0.0] * len(graph.ops)
    running = 0.0
    for index in reversed(range(len(graph.ops))):
        out[index] = running
        running += op_flops(types, graph.ops[index])
    return out


def sbp(graph: Graph, context: PassContext | None = None) -> Graph:
    context = context or PassContext()
    axes = graph.sbp_axes
    if not axes:
        return graph  # a pure pipeline: every tensor is whole on its stage
    if context.auto_sbp:

        graph = apply(graph, search(graph, context, context.auto_sbp))
    seeds = list(graph.inputs) + [p.name for p in graph.params]
    assigned: dict[str, list[tuple[str, Sbp]]] = {}
    for name in seeds:
        annotation = graph.values[name].sbp or NdSbp(())
        assigned[name] = [(axis, annotation.on(axis)) for axis in axes]
    needs: dict[int, list[list[tuple[str, Sbp]]]] = {}
    types = Types(graph)
    later = _later_flops(graph, types)
    for axis_index, axis in enumerate(axes):
        chooser = _AxisChooser(graph, axis, {k: v[:axis_index] for k, v in assigned.items()},
                               context, later, types)
        for index, op in enumerate(graph.ops):
            current = [assigned[i][axis_index][1] for i in op.inputs]
            out_earlier = [assigned.get(o, [])[:axis_index] for o in op.outputs]
            sig_in, sig_out = chooser.choose(index, op, current, out_earlier)
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

