"""sbp search: the layouts of the parameters an `auto` rule leaves open, by a global search.

On each mesh axis the batch is not split over, a dynamic programme runs over the ops in graph
(topological) order. A state is the SBP of every live value (produced or seeded, read again
later) and of every `auto` parameter already placed and read again (a tied table); states that
agree on those merge, keeping the cheapest, and a beam bounds how many survive each op. An op's
step tries each catalog signature: the boxing its operands need, forward and its backward image
(alpha-beta on the axis's link); its compute (FLOPs forward and backward on every rank when
nothing about it is split, 1/n otherwise); the gradient all-reduce of a whole parameter read
next to split operands; and each parameter's gradient all-reduce over the batch axes, smaller
when split here. An `auto` parameter takes the SBP its first reader's signature asks for (B or
S, never P). The cheapest final state wins, a graph output left partial paying its all-reduce;
parameter and optimizer memory breaks ties. The sbp pass then propagates from the layouts
chosen, as from annotations.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from ...ops.catalog import CATALOG
from ...ops.comm import boxing_kind
from ...ops.costs import nbytes
from ...ops.sbp import BROADCAST, NdSbp, Sbp
from ...ops.signatures import signatures
from ..ir import Graph, Value
from ..links import axis_link
from .context import PassContext
from .sbp_costs import Types, op_flops, transfer_time

BEAM = 32
ADAM_BYTES = 4  # a parameter's f32 copy, gradient and two moments, per byte of it


@dataclass(frozen=True, kw_only=True)
class Step:
    """What one op costs in the chosen (or a forced) layout on one axis."""

    op: int
    compute: float
    comm: dict[str, float]  # collective kind -> seconds


@dataclass(frozen=True, kw_only=True)
class AxisResult:
    axis: str
    layouts: dict[str, Sbp]  # auto parameter -> its SBP on this axis
    total: float  # seconds
    compute: float
    comm: dict[str, float]
    memory: float  # parameter and optimizer bytes per rank of the auto parameters


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    axes: tuple[AxisResult, ...]
    batch_axes: tuple[str, ...]
    seconds: float  # the search's own time
    forced: dict[tuple[str, str, str], AxisResult] = field(default_factory=dict)


class _Axis:
    def __init__(self, graph: Graph, axis: str, batch_axes: tuple[str, ...],
                 context: PassContext, types: Types, auto: set[str]):
        self.graph, self.axis, self.types, self.auto = graph, axis, types, auto
        self.n = graph.axis_size(axis)
        hw = context.hardware
        peak = hw.flops_bf16 if context.precision == "bf16" else hw.flops_f32
        self.rate = peak * hw.efficiency
        self.bandwidth, self.latency = axis_link(graph.mesh, hw, axis)
        self.batch = [(graph.axis_size(a), *axis_link(graph.mesh, hw, a)) for a in batch_axes]
        self.ways = 1
        for a in batch_axes:
            self.ways *= graph.axis_size(a)
        self.memory_scale = 1e-9 / hw.memory  # a tie-break far below any time
        self.params = {p.name for p in graph.params}
        last: dict[str, int] = {}
        for index, op in enumerate(graph.ops):
            for name in op.inputs:
                last[name] = index
        for _, name in graph.outputs:
            last[name] = len(graph.ops)
        self.last = last

    @functools.cache  # noqa: B019 - one chooser per search, dropped with it
    def size(self, name: str) -> float:
        t = self.types[name]
        batched = any("batch" in str(d) for d in self.graph.values[name].type.shape)
        return nbytes(t) / (self.ways if batched else 1)

    @functools.cache  # noqa: B019
    def fits(self, name: str, sbp: Sbp) -> bool:
        if sbp.kind != "S":
            return True
        size = self.types[name].shape[sbp.dim].as_int()
        return size is not None and size % self.n == 0

    @functools.cache  # noqa: B019
    def transfer(self, kind: str | None, size: float, differentiable: bool) -> float:
        if kind is None:
            return 0.0
        return transfer_time(kind, size, differentiable, self.n, self.bandwidth, self.latency)

    def sync(self, size: float) -> float:
        """The gradient all-reduce over the batch axes of a parameter of `size` bytes."""
        return sum(2 * size * (n - 1) / (n * bw) + 2 * (n - 1) * lat
                   for n, bw, lat in self.batch if n > 1)

    def search(self, seeds: dict[str, Sbp], forced: dict[str, Sbp]) -> AxisResult:
        # state key -> (cost, memory, live sbps, placed params, trail)
        states = {(): (0.0, 0.0, {k: v for k, v in seeds.items() if k in self.last}, {}, ())}
        for index, op in enumerate(self.graph.ops):
            sigs, flops = self.op_signatures(index)
            fresh: dict[tuple, tuple] = {}
            for cost, memory, live, placed, trail in states.values():
                for sig_in, sig_out in sigs:
                    step = self.step(index, op, flops, live, placed, forced, sig_in, sig_out)
                    if step is None:
                        continue
                    extra, extra_memory, now_placed, parts = step
                    new_live = {k: v for k, v in live.items() if self.last.get(k, -1) > index}
                    for name, sbp in zip(op.outputs, sig_out):
                        if self.last.get(name, -1) > index:
                            new_live[name] = sbp
                    for name, sbp in now_placed.items():
                        if self.last.get(name, -1) > index:
                            new_live[name] = sbp
                    all_placed = {**placed, **now_placed}
                    key = tuple(sorted(new_live.items()))
                    total = cost + extra
                    old = fresh.get(key)
                    if old is None or (total, memory + extra_memory) < old[:2]:
                        fresh[key] = (total, memory + extra_memory, new_live, all_placed,
                                      (trail, parts))
            assert fresh, f"{op.kind} has no signature on {self.axis}"
            ranked = sorted(fresh.items(), key=lambda kv: (kv[1][0] + kv[1][1] *
                                                           self.memory_scale))
            states = dict(ranked[:BEAM])
        best = None
        for cost, memory, live, placed, trail in states.values():
            tail = sum(self.transfer("all_reduce", self.size(name), False)
                       for _, name in self.graph.outputs if live.get(name, BROADCAST).kind == "P")
            score = (cost + tail + memory * self.memory_scale, cost + tail, memory, placed,
                     trail)
            if best is None or score[0] < best[0]:
                best = score
        _, total, memory, placed, trail = best
        steps: list[Step] = []
        while trail:
            trail, parts = trail
            steps.append(parts)
        comm: dict[str, float] = {}
        for s in steps:
            for kind, t in s.comm.items():
                comm[kind] = comm.get(kind, 0.0) + t
        return AxisResult(axis=self.axis, layouts=placed, total=total,
                          compute=sum(s.compute for s in steps), comm=comm, memory=memory)

    @functools.cache  # noqa: B019
    def op_signatures(self, index: int):
        """The op's signatures that divide on this axis, and its FLOPs per batch shard."""
        op = self.graph.ops[index]
        ins = [self.types[i] for i in op.inputs]
        outs = [self.types[o] for o in op.outputs]
        attrs = CATALOG[op.kind].full_attrs(op.attrs)
        sigs = [s for s in signatures(op.kind, ins, outs, attrs)
                if all(self.fits(n, b) for n, b in zip(op.inputs, s[0]))
                and all(self.fits(n, b) for n, b in zip(op.outputs, s[1]))]
        return sigs, op_flops(self.types, op) / self.ways

    def step(self, index, op, flops, live, placed, forced, sig_in, sig_out):
        comm: dict[str, float] = {}
        now_placed: dict[str, Sbp] = {}
        memory = 0.0
        split = any(s.kind == "S" for s in sig_in + sig_out)
        for name, want in zip(op.inputs, sig_in):
            if name in self.auto and name not in placed and name not in now_placed:
                if want.kind == "P" or (name in forced and forced[name] != want):
                    return None
                now_placed[name] = want
                ways = self.n if want.kind == "S" else 1
                memory += ADAM_BYTES * self.size(name) / ways
                sync = self.sync(self.size(name) / ways)
                if sync:
                    comm["grad_all_reduce@batch"] = comm.get("grad_all_reduce@batch", 0) + sync
                have = want
            else:
                have = live.get(name, placed.get(name, now_placed.get(name, BROADCAST)))
            kind = boxing_kind(have, want)
            t = self.types[name]
            if kind is not None:
                comm[kind] = comm.get(kind, 0.0) + self.transfer(kind, self.size(name),
                                                                 t.is_float)
            if name in self.params and want.kind == "B" and split and t.is_float:
                comm["grad_all_reduce"] = comm.get("grad_all_reduce", 0.0) + self.transfer(
                    "all_reduce", self.size(name), False)
        compute = flops / (self.n if split else 1) / self.rate
        return compute + sum(comm.values()), memory, now_placed, Step(op=index, compute=compute,
                                                                      comm=comm)


def batch_axes(graph: Graph) -> tuple[str, ...]:
    """The axes some model input is split over: data parallelism, which `auto` keeps."""
    out = []
    for axis in graph.sbp_axes:
        if any((graph.values[i].sbp or NdSbp(())).on(axis).kind == "S" for i in graph.inputs):
            out.append(axis)
    return tuple(out)


def search(graph: Graph, context: PassContext, auto: tuple[str, ...],
           explain: bool = False) -> SearchResult:
    """The cheapest layouts of the `auto` parameters on each axis the batch is not split over;
    with `explain`, also the best plan with each parameter forced to each other layout (the
    first of the parameters that differ only by a layer index)."""
    import time

    start = time.perf_counter()
    types = Types(graph)
    batch = batch_axes(graph)
    results, forced = [], {}
    names = set(auto) & set(graph.values)
    for axis in graph.sbp_axes:
        if axis in batch:
            continue
        seeds = {name: (graph.values[name].sbp or NdSbp(())).on(axis)
                 for name in list(graph.inputs) + [p.name for p in graph.params]
                 if name not in names}
        chooser = _Axis(graph, axis, batch, context, types, names)
        best = chooser.search(seeds, {})
        results.append(best)
        if explain:
            firsts = {re.sub(r"\[\d+\]", "[*]", name): name for name in reversed(best.layouts)}
            for name in firsts.values():
                chosen = best.layouts[name]
                for other in _alternatives(graph, name, chosen, chooser):
                    try:
                        forced[(axis, name, str(other))] = chooser.search(seeds, {name: other})
                    except AssertionError:
                        continue
    return SearchResult(axes=tuple(results), batch_axes=batch,
                        seconds=time.perf_counter() - start, forced=forced)


def _alternatives(graph: Graph, name: str, chosen: Sbp, chooser: _Axis) -> list[Sbp]:
    rank = graph.values[name].type.rank
    options = [BROADCAST] + [Sbp("S", k) for k in range(rank)]
    return [o for o in options if o != chosen and chooser.fits(name, o)]


def apply(graph: Graph, result: SearchResult) -> Graph:
    """The graph with each auto parameter annotated as the search chose (B on batch axes)."""
    chosen: dict[str, dict[str, Sbp]] = {}
    for axis_result in result.axes:
        for name, sbp in axis_result.layouts.items():
            chosen.setdefault(name, {})[axis_result.axis] = sbp
    values = dict(graph.values)
    for name, per_axis in chosen.items():
        v = values[name]
        sbp = NdSbp(tuple((axis, per_axis.get(axis, BROADCAST)) for axis in graph.sbp_axes))
        values[name] = Value(v.name, v.type, sbp, v.stage)
    return graph.with_(values=values)
