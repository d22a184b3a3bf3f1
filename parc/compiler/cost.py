"""The cost model: time of every op and collective on the declared hardware, and memory.

Op time is max(FLOPs / achievable FLOP/s, bytes / memory bandwidth), per rank (an op split over
an axis does 1/n of the work on each of its ranks), for the forward, the input gradient (B)
and the weight gradient (W) separately. Collectives are alpha-beta on the link their mesh
axis maps to: within a node when the axis group fits in one, across nodes otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dsl.spec import HardwareSpec
from ..ops.catalog import CATALOG
from ..ops.comm import COMMS, SYNC_BUCKET_BYTES, backward_bytes, forward_bytes, ring_time
from ..ops.costs import nbytes, numel, op_cost
from ..ops.saved import EXTRA, PER_ROW, RELAYOUTS, SAVES, VIEWS
from ..ops.sbp import Sbp
from .gathered import gathered_params
from .ir import Graph, Op
from .links import axis_link, pipeline_links
from .peephole import linear_pairs
from .step_sync import step_syncs

BACKWARD_COMM = {"grad_all_reduce": "all_reduce", "all_gather": "reduce_scatter",
                 "reduce_scatter": "all_gather", "all_to_all": "all_to_all"}
OPTIMIZER_STATE_BYTES = {"adamw": 8, "sgd": 4}  # per parameter: two fp32 moments, or momentum


@dataclass(frozen=True)
class OpTime:
    fwd: float
    bwd_input: float
    bwd_weight: float
    step: float = 0.0  # once per step: a parameter's gradient synchronisation
    flops: float = 0.0  # forward and backward FLOPs on one rank, one microbatch


class CostModel:
    def __init__(self, graph: Graph, hardware: HardwareSpec, precision: str = "f32",
                 fused: bool = False):
        """`fused`: the program fuses elementwise chains (the Triton backend), so only the last
        op of a chain pays a kernel launch."""
        self.graph = graph
        self.hw = hardware
        peak = hardware.flops_bf16 if precision == "bf16" else hardware.flops_f32
        self.flops = peak * hardware.efficiency
        self.precision = precision
        self.params = {p.name for p in graph.params}
        self.param_like = self._parameter_values()
        self.step_synced = set(step_syncs(graph))  # gradient all-reduces run once per step
        # parameters gathered where they are read (ZeRO): whole only while in use
        self.gathered = gathered_params(graph, precision)
        self.gathered_inner = {n for g in self.gathered.values() for n in g.inner}
        self._concrete: dict = {}
        self._producer = graph.producers()
        self._links: dict[tuple[int, int], frozenset] = {}
        # results of ops that run inside another op's kernel: a matmul with its bias add
        # (one F.linear), and with the Triton backend all but the last op of a fused chain
        self.inner: set[str] = set(linear_pairs(graph, graph.ops))
        if fused:
            from .passes.fuse import fuse

            last: dict[int, str] = {}
            for op in fuse(graph).ops:
                k = op.attr("kernel")
                if k is not None:
                    if k in last:
                        self.inner.add(last[k])
                    last[k] = op.outputs[0]

    # ---- links
    def axis_link(self, axis: str, collective: bool = True) -> tuple[float, float]:
        return axis_link(self.graph.mesh, self.hw, axis, collective)

    def p2p_time(self, size: float, src: int = 0, dst: int = 1) -> float:
        """A point-to-point transfer from pipeline rank `src` to `dst` (by default between
        neighbours; with `regions` the ranks' own links)."""
        if "pp" not in dict(self.graph.mesh):
            return 0.0
        if self.hw.regions is None:
            bandwidth, latency = self.axis_link("pp", collective=False)
            return latency + size / bandwidth
        key = (src, dst)
        if key not in self._links:
            self._links[key] = pipeline_links(self.graph.mesh, self.hw, src, dst)
        return max(latency + size / bandwidth for bandwidth, latency in self._links[key])

    # ---- sizes
    def shard_factor(self, op: Op) -> int:
        """How many ways an op's work is divided: by every axis it is split or partial on."""
        factor = 1
        for axis in self.graph.sbp_axes:
            names = op.inputs + op.outputs
            if any(self.graph.values[n].sbp is not None and
                   self.graph.values[n].sbp.on(axis).kind in "SP" for n in names):
                factor *= self.graph.axis_size(axis)
        return factor

    def concrete(self, name: str):
        """A value's type with `batch` bound (cached: costs ask for it often)."""
        if name not in self._concrete:
            self._concrete[name] = self.graph.concrete(self.graph.values[name].type)
        return self._concrete[name]

    def local_numel(self, name: str) -> float:
        """Elements of a value on one rank."""
        value = self.graph.values[name]
        count = float(numel(self.concrete(name)))
        if value.sbp is not None:
            for axis in self.graph.sbp_axes:
                if value.sbp.on(axis).kind == "S":
                    count /= self.graph.axis_size(axis)
        return count

    def local_bytes(self, name: str, except_axis: str | None = None) -> float:
        """Bytes of a value on one rank (splits on `except_axis` not applied)."""
        value = self.graph.values[name]
        size = float(nbytes(self.concrete(name)))
        if value.sbp is not None:
            for axis in self.graph.sbp_axes:
                if axis != except_axis and value.sbp.on(axis).kind == "S":
                    size /= self.graph.axis_size(axis)
        if self.precision == "bf16" and value.type.is_float and name not in self.param_like:
            size /= 2  # autocast computes in bf16; parameters and their gradients stay f32
        return size

    def _parameter_values(self) -> set[str]:
        """Parameters and their identities through communication (gathered, synced)."""
        found = set(self.params)
        for op in self.graph.ops:
            if op.kind in COMMS and op.inputs[0] in found:
                found.add(op.outputs[0])
        return found

    def saved(self, op: Op) -> list[tuple[str, float]]:
        """What the op's backward keeps (ops/saved.py), as (storage, bytes on one rank): a
        view is kept as the tensor it views, parameters are not activations, and a gathered
        parameter is only a handle (gathered.py)."""
        if op.kind in COMMS:
            return []
        producer = self._producer
        out = []
        for which in SAVES.get(op.kind, (0,)):
            name = op.outputs[0] if which == "out" else op.inputs[which]
            if name in self.param_like:
                continue
            if op.kind == "matmul" and name in producer and \
                    producer[name].kind in RELAYOUTS:  # batched matmul copies the view
                out.append((f"{name}:contiguous", self.local_bytes(name)))
                continue
            while name in producer and (producer[name].kind in VIEWS or (
                    producer[name].kind == "merge_heads" and
                    producer[producer[name].inputs[0]].kind == "causal_attention")):
                name = producer[name].inputs[0]  # attention's output is laid out to merge
            out.append((name, self.local_bytes(name)))
        if op.kind in EXTRA:
            operand, per = EXTRA[op.kind]
            size = self.local_bytes(op.inputs[operand]) * per
            if op.kind == "cross_entropy":  # computed in f32 whatever the logits are
                size = self.local_numel(op.inputs[operand]) * 4 * per
            out.append((f"{op.outputs[0]}:extra", size))
        if op.kind == "softmax" and op.attr("causal"):  # the mask, one byte per score
            seq = self.concrete(op.inputs[0]).shape[-1].as_int() or 0
            out.append((f"{op.outputs[0]}:mask", float(seq * seq)))
        if op.kind in PER_ROW:
            operand, per = PER_ROW[op.kind]
            shape = self.concrete(op.inputs[operand]).shape
            rows = self.local_numel(op.inputs[operand]) / max(1, shape[-1].as_int() or 1)
            out.append((f"{op.outputs[0]}:rows", rows * 4 * per))
        return out

    # ---- time
    def compute_time(self, flops: float, size: float) -> float:
        return max(flops / self.flops, size / self.hw.mem_bw)

    def op_time(self, op: Op) -> OpTime:
        if op.kind in COMMS:
            return self.comm_time(op)
        ins = [self.concrete(i) for i in op.inputs]
        outs = [self.concrete(o) for o in op.outputs]
        spec = CATALOG[op.kind]
        attrs = spec.full_attrs(op.attrs)
        cost = op_cost(op.kind, ins, outs, attrs)
        n = self.shard_factor(op)
        scale = 0.5 if self.precision == "bf16" else 1.0
        weight_flops = sum(f for f, name in zip(cost.flops_bwd, op.inputs)
                           if name in self.param_like)
        input_flops = sum(f for f, name, t in zip(cost.flops_bwd, op.inputs, ins)
                          if name not in self.param_like and t.is_float)
        total_bwd = max(1, weight_flops + input_flops)
        fwd = self.compute_time(cost.flops_fwd / n, cost.bytes_fwd * scale / n)
        bwd_bytes = cost.bytes_bwd * scale / n
        # each kernel (or eager op) costs at least a launch; ops fused into a later one do not
        extra = 0.0 if op.outputs[0] in self.inner else self.hw.op_overhead
        bwd_input = self.compute_time(input_flops / n, bwd_bytes * input_flops / total_bwd)
        bwd_weight = self.compute_time(weight_flops / n, bwd_bytes * weight_flops / total_bwd)
        fwd += self.vocab_parallel_time(op)
        ring_fwd, ring_bwd = self.ring_attention_time(op, fwd)
        fwd += ring_fwd
        bwd_input += ring_bwd
        return OpTime(fwd + extra, bwd_input + (extra if input_flops or not weight_flops else 0),
                      bwd_weight + (extra if weight_flops else 0.0),
                      flops=(cost.flops_fwd + input_flops + weight_flops) / n)

    def vocab_parallel_time(self, op: Op) -> float:
        """Cross-entropy over a split vocabulary all-reduces three f32 numbers per row (max,
        exp-sum, target logit) over each axis that splits it."""
        if op.kind != "cross_entropy":
            return 0.0
        logits = self.graph.values[op.inputs[0]]
        vocab = logits.type.rank - 1
        total = 0.0
        for axis in self.graph.sbp_axes:
            if logits.sbp is not None and logits.sbp.on(axis) == Sbp("S", vocab):
                bandwidth, latency = self.axis_link(axis)
                size = 4 * self.local_numel(op.inputs[1])
                total += 3 * ring_time("all_reduce", size, self.graph.axis_size(axis),
                                       bandwidth, latency)
        return total

    def ring_axis(self, op: Op) -> str | None:
        """The axis whose ring attention runs this op: its queries split by sequence there
        (only the context-parallel axis has that signature)."""
        if op.kind != "causal_attention":
            return None
        q = self.graph.values[op.inputs[0]]
        seq = Sbp("S", q.type.rank - 2)
        return next((a for a in self.graph.sbp_axes if q.sbp is not None
                     and q.sbp.on(a) == seq), None)

    def ring_bytes(self, op: Op) -> tuple[float, float]:
        """What one rank sends around the ring (runtime/ring_attention.py): the K/V block
        (cp - 1 times forward), and in the backward K/V with their f32 gradients (cp - 1
        times, f32) and the gradients home (once)."""
        axis = self.ring_axis(op)
        if axis is None:
            return 0.0, 0.0
        n = self.graph.axis_size(axis)
        kv = self.local_bytes(op.inputs[1]) + self.local_bytes(op.inputs[2])
        kv32 = 4 * (self.local_numel(op.inputs[1]) + self.local_numel(op.inputs[2]))
        return (n - 1) * kv, (n - 1) * 2 * kv32 + kv32

    def ring_traffic(self, op: Op) -> float:
        """Bytes the ring moves over its axis, forward and backward, counted as `comm_bytes`
        counts a collective (of the whole tensor: the n ranks' sends added up)."""
        axis = self.ring_axis(op)
        if axis is None:
            return 0.0
        n = self.graph.axis_size(axis)
        kv = float(nbytes(self.concrete(op.inputs[1])) + nbytes(self.concrete(op.inputs[2])))
        kv32 = 4.0 * (numel(self.concrete(op.inputs[1])) + numel(self.concrete(op.inputs[2])))
        return (n - 1) * kv + (n - 1) * 2 * kv32 + kv32

    def ring_attention_time(self, op: Op, compute_fwd: float) -> tuple[float, float]:
        """Seconds the ring adds to attention, forward and backward: each forward transfer
        hides behind one of the n block steps of compute (what it exceeds them by shows);
        the backward's transfers carry the gradients just computed, so they add up."""
        axis = self.ring_axis(op)
        if axis is None:
            return 0.0, 0.0
        n = self.graph.axis_size(axis)
        bandwidth, latency = self.axis_link(axis, collective=False)
        fwd_bytes, bwd_bytes = self.ring_bytes(op)
        hop = latency + fwd_bytes / (n - 1) / bandwidth if n > 1 else 0.0
        fwd = (n - 1) * max(0.0, hop - compute_fwd / n)
        bwd = n * latency + bwd_bytes / bandwidth if n > 1 else 0.0
        return fwd, bwd

    def comm_bytes(self, op: Op) -> float:
        """Total bytes a communication op moves over its axis, forward and backward."""
        value = self.graph.values[op.inputs[0]]
        size = int(nbytes(self.concrete(op.inputs[0])))
        n = self.graph.axis_size(op.attr("axis"))
        return forward_bytes(op.kind, size, n) + backward_bytes(op.kind, size, n,
                                                                value.type.is_float)

    def comm_time(self, op: Op) -> OpTime:
        axis = op.attr("axis")
        n = self.graph.axis_size(axis)
        bandwidth, latency = self.axis_link(axis)
        size = self.local_bytes(op.inputs[0], except_axis=axis)
        fwd = ring_time(op.kind, size, n, bandwidth, latency) if COMMS[op.kind].collective else 0.0
        backward = BACKWARD_COMM.get(op.kind)
        value = self.graph.values[op.inputs[0]]
        bwd = ring_time(backward, size, n, bandwidth, latency) if (
            backward and value.type.is_float) else 0.0
        if op.outputs[0] in self.step_synced:
            # once per step, after accumulation; the runtime packs gradients into buckets of
            # SYNC_BUCKET_BYTES, so a parameter pays its share of a bucket's latency
            share = min(1.0, size / SYNC_BUCKET_BYTES)
            return OpTime(fwd, 0.0, 0.0,
                          step=ring_time("all_reduce", size, n, bandwidth, latency * share))
        return OpTime(fwd, bwd, 0.0)


def optimizer_state_bytes(name: str) -> int:
    return OPTIMIZER_STATE_BYTES.get(name, 8)


# The optimizer step reads and writes f32 state per parameter element: AdamW reads the
# parameter, its gradient and two moments and writes three; SGD with momentum reads three and
# writes two. The runtime steps them fused (one multi-tensor kernel over all of a rank's
# parameters, on CPU and CUDA alike): a few launches, and a small cost per tensor.
OPTIMIZER_BYTES = {"adamw": 7 * 4, "sgd": 5 * 4}
OPTIMIZER_OPS = 4
OPTIMIZER_PER_TENSOR = 0.1  # in op overheads


def optimizer_time(hw: HardwareSpec, name: str, numel: float, tensors: int) -> float:
    """One optimizer step over a rank's parameters."""
    launches = (OPTIMIZER_OPS + OPTIMIZER_PER_TENSOR * tensors) if tensors else 0.0
    return numel * OPTIMIZER_BYTES.get(name, 28) / hw.mem_bw + launches * hw.op_overhead
