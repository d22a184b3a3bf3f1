"""What the generated program contains, decided here; the templates only lay it out.

For every stage: its parameters (local shards), the values it receives and sends, the data
inputs it reads, and one line of torch per op, with the communication written out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...ops.catalog import CATALOG
from ...ops.comm import COMMS
from ...ops.keys import dropout_key
from ...ops.lowering import TORCH_DTYPES, torch_lowering, triton_lowering
from ...ops.sbp import Sbp
from ...ops.types import TensorT
from ..boundaries import param_carriers, stage_boundaries
from ..gathered import gathered_params
from ..ir import Graph, Op
from ..passes.fuse import fuse, recompute_instance
from ..peephole import linear_pairs
from ..plan import Plan
from ..step_sync import step_syncs
from . import calls
from . import fused as fused_kernels
from .calls import attr, below
from .fused import FusedKernel

REDUCTIONS = {"cross_entropy", "mean"}  # a local mean over a shard is 1/n of a partial sum


@dataclass
class _Item:
    """One line of a stage's forward: what it reads and writes (IR names)."""
    line: str
    scope: str
    instance: str | None  # the recomputed call instance it belongs to, if any
    reads: list[str]
    writes: list[str]
    key: tuple[str, int] | None = None  # a dropout's (scope, ordinal): its mask's key


@dataclass
class ParamCode:
    name: str  # embed.wte
    attr: str  # embed_wte
    shape: list[int]  # full
    local_shape: list[int]
    init: tuple[str, tuple[float, ...]]
    splits: list[tuple[str, int]]  # (axis, dim) for every axis that splits it
    sbp: str


@dataclass
class StageCode:
    index: int
    rank: int
    layers: list[str]
    params: list[ParamCode] = field(default_factory=list)
    live_in: list[dict] = field(default_factory=list)  # {name, var, dtype, shape (local)}
    live_out: list[dict] = field(default_factory=list)
    data_inputs: list[str] = field(default_factory=list)
    loss: str | None = None
    lines: list[str] = field(default_factory=list)
    step_sync: list[tuple[str, str]] = field(default_factory=list)  # (param attr, axis)
    synced: list[tuple[str, str]] = field(default_factory=list)  # (param name, axis)
    # parameters gathered where they are read (ZeRO), in the order the stage's GATHERED
    # lists them: (param attr, [(axis, dim, whole gradient)], dtype or None); while the ops
    # are emitted, the parameter's name in the forward's order
    gathered: list[tuple[str, list[tuple[str, int, bool]], str | None]] = field(
        default_factory=list)
    imports: list[str] = field(default_factory=list)
    # the def calls run as module instances (codegen/calls.py): the classes' code, the
    # parameters the stage itself declares, and the lines of __init__ that make the instances
    classes: list[str] = field(default_factory=list)
    inline_params: list[ParamCode] = field(default_factory=list)
    init_lines: list[str] = field(default_factory=list)
    nested_gathered: bool = False  # instances gather parameters: GATHERED lists theirs too

    @property
    def class_name(self) -> str:
        return f"Stage{self.index}"

    @property
    def layer_spans(self) -> list[str]:
        """The layers, consecutive calls of one def as one span: embed, block[0..9]."""
        return calls.spans(self.layers)


def var(name: str) -> str:
    """A Python name for an IR value: %43 -> t43, %tokens -> tokens."""
    if name.isdigit():
        return f"t{name}"
    return attr(name)


class Emitter:
    def __init__(self, plan: Plan, kernels: str = "torch"):
        self.plan = plan
        self.kernels = kernels  # "triton": parc.stdlib.kernels (ops/lowering.py says which)
        # triton also fuses elementwise chains into generated kernels
        self.graph: Graph = fuse(plan.graph, plan.spec.parallel.recompute) \
            if kernels == "triton" else plan.graph
        self.fused: list[FusedKernel] = []  # one per distinct pattern
        self.patterns: dict[tuple, FusedKernel] = {}
        self.batch = dict(self.graph.bindings).get("batch", 1)
        self.params = {p.name: p for p in self.graph.params}
        self.carriers = param_carriers(self.graph)
        self.synced = step_syncs(self.graph)  # grad_all_reduce result -> its operand
        self.gathers = gathered_params(self.graph, plan.spec.train.precision)
        self.inner_gathers = {n for g in self.gathers.values() for n in g.inner}
        self.context_axis = plan.spec.parallel.context_parallel
        self.dropout_place: dict[str, tuple[str, int]] = {}  # output -> (scope, ordinal)
        for op in self.graph.ops:
            if op.kind == "dropout":
                ordinal = sum(1 for s, _ in self.dropout_place.values() if s == op.scope)
                self.dropout_place[op.outputs[0]] = (op.scope, ordinal)

    # ---- shapes
    def splits(self, name: str) -> list[tuple[str, int]]:
        sbp = self.graph.values[name].sbp
        if sbp is None:
            return []
        return [(axis, s.dim) for axis, s in sbp.axes if s.kind == "S"]

    def local_shape(self, name: str) -> list[int]:
        t = self.graph.values[name].type
        shape = [d.subs({"batch": self.batch}).as_int() for d in t.shape]
        for axis, dim in self.splits(name):
            shape[dim] //= self.graph.axis_size(axis)
        return shape

    # ---- stages
    def stages(self) -> list[StageCode]:
        g = self.graph
        num = len(self.plan.stages)
        codes = []
        for info, edge in zip(self.plan.stages, stage_boundaries(g, num)):
            s = info.index
            code = StageCode(s, info.rank, info.units)
            code.live_in = [self.boundary(n) for n in edge.live_in]
            code.live_out = [self.boundary(n) for n in edge.live_out]
            code.data_inputs = list(edge.data_inputs)
            self.emit_ops(code, [op for op in g.ops if g.values[op.outputs[0]].stage == s])
            if s == num - 1:
                code.loss = var(dict(g.outputs).get("loss", g.outputs[0][1]))
            codes.append(code)
        return codes

    def boundary(self, name: str) -> dict:
        """A tensor sent between stages: under `precision bf16` float activations and their
        gradients travel in bf16 (as the cost model charges them)."""
        v = self.graph.values[name]
        dtype = "bf16" if (self.plan.spec.train.precision == "bf16" and v.type.is_float) \
            else v.type.dtype
        return {"name": name, "var": var(name), "dtype": dtype,
                "shape": self.local_shape(name)}

    def param_code(self, name: str) -> ParamCode:
        v = self.graph.values[name]
        sbp = str(v.sbp) if v.sbp is not None else "B"
        return ParamCode(name, attr(name), [d.as_int() for d in v.type.shape],
                         self.local_shape(name), self.params[name].init,
                         [(axis, dim) for axis, dim in self.splits(name)], sbp)

    def operand(self, name: str) -> str:
        if name in self.params:
            return f"self.{attr(name)}"
        if name in self.synced:  # the parameter itself; its gradient is synced per step
            return self.operand(self.synced[name])
        return var(name)

    def emit_ops(self, code: StageCode, ops: list[Op]) -> None:
        used_params: list[str] = []
        items: list[_Item] = []
        groups = fused_kernels.groups(self.graph, ops) if self.kernels == "triton" else {}
        names = set(self.plan.spec.parallel.recompute)
        linear = linear_pairs(self.graph, ops)  # matmul result -> its bias add
        fused_into = {add.outputs[0]: mm for mm, add in linear.items()}
        producer = {o: op for op in ops for o in op.outputs}
        for op in ops:
            for name in op.inputs:
                root = self.carriers.get(name, name)
                if root in self.params and root not in used_params:
                    used_params.append(root)
            k = op.attr("kernel") if groups else None
            instance = recompute_instance(op.scope, names - {"all"})
            if k is not None:
                if op is not groups[k][-1]:
                    continue  # the group runs as one kernel, at its last member
                kernel = self.fused_kernel(k, groups[k])
                reads = kernel.inputs + kernel.weights
                outs = ", ".join(var(o) for o in kernel.outputs)
                args = ", ".join(self.operand(n) for n in reads)
                items.append(_Item(f"{outs} = kernels.{kernel.name}({args})", op.scope,
                                   instance, reads, kernel.outputs))
                continue
            if op.kind == "matmul" and op.outputs[0] in linear:
                continue  # computed with its bias add, as one F.linear
            if op.outputs[0] in fused_into:
                matmul = producer[fused_into[op.outputs[0]]]
                x, w, b = (self.operand(n) for n in (matmul.inputs + op.inputs[1:]))
                reads = list(matmul.inputs) + list(op.inputs[1:])
                expr = f"torch.addmm({b}, {x}, {w})" if \
                    self.graph.values[matmul.inputs[0]].type.rank == 2 else \
                    f"F.linear({x}, {w}.t(), {b})"
                items.append(_Item(f"{var(op.outputs[0])} = {expr}", op.scope, instance, reads,
                                   list(op.outputs)))
                continue
            line = self.line(code, op)
            if line is not None:
                # a gathered parameter reads the module's shard, not its chain's values
                reads = [] if op.outputs[0] in self.gathers else list(op.inputs)
                items.append(_Item(line, op.scope, instance, reads, list(op.outputs),
                                   self.dropout_place.get(op.outputs[0])))
        later = {v["name"] for v in code.live_out} | {dict(self.graph.outputs).get("loss", "")}
        items = self.free_gathered(items)
        code.params = [self.param_code(p) for p in used_params]
        if not calls.fold(self, code, items, later):  # one module per def call, or flat
            self.emit_body(code.lines, items, [], later)
            code.inline_params = list(code.params)
            code.step_sync = [(attr(name), axis) for name, axis in code.synced]
            code.gathered = [(attr(name), steps, dtype) for name, steps, dtype in code.gathered]
        text = "\n".join(code.lines + code.classes + code.init_lines)
        if code.nested_gathered:
            text += "\nnested( lend("
        code.imports = [name for name in ("torch", "F", "C", "K", "Z", "causal_attention",
                                          "causal_softmax", "counted", "dropout", "rope",
                                          "ring_attention", "checkpoint", "kernels", "Calls",
                                          "nested", "lend", "dropout_keys")
                        if re.search(rf"(?<![\w.]){name}[.(]", text)]

    def emit_body(self, out: list[str], items: list[_Item], after: list[_Item],
                  later: set[str], call: str | None = None) -> None:
        """The lines of `items` (those of the call `call`, scopes written below it), calls
        under activation checkpointing as functions; `after` and `later` read what they make."""
        i = 0
        while i < len(items):
            instance = items[i].instance
            j = i + 1
            while j < len(items) and items[j].instance == instance:
                j += 1
            if instance is None:
                self.emit_lines(out, items[i:j], "", call=call)
            else:
                self.emit_checkpoint(out, items[i:j], instance, items[j:] + after, later,
                                     call)
            i = j

    def free_gathered(self, items: list[_Item]) -> list[_Item]:
        """A `del` after the last line that reads a gathered parameter: the whole tensor is
        freed as soon as it has been used (autograd keeps only a handle to it)."""
        last = {}
        for k, item in enumerate(items):
            for name in item.reads:
                if name in self.gathers:
                    last[name] = k
        out = []
        for k, item in enumerate(items):
            out.append(item)
            for name in sorted(n for n, at in last.items() if at == k):
                out.append(_Item(f"del {var(name)}", item.scope, item.instance, [], []))
        return out

    def fused_kernel(self, k: int, ops: list[Op]) -> FusedKernel:
        """The group's kernel: a new one, or the one of an earlier group with its pattern."""
        kernel = fused_kernels.build(self.graph, len(self.fused), ops)
        shared = self.patterns.setdefault(kernel.pattern(), kernel)
        if shared is kernel:
            self.fused.append(kernel)
        shared.sites.append(ops[-1].scope or "(model)")
        kernel.index = shared.index
        return kernel

    @staticmethod
    def emit_lines(out: list[str], items: list[_Item], indent: str,
                   scope: str | None = None, call: str | None = None) -> None:
        """The items' lines, each scope written once before its lines; in a call's class,
        only the scope one level below the call."""
        for item in items:
            shown = item.scope or "(model)"
            if call is not None:
                shown = below(item.scope, call).lstrip(".").split(".", 1)[0]
            if shown != scope:
                scope = shown
                if shown:
                    out.append(f"{indent}# {shown}")
            out.append(indent + item.line)

    def emit_checkpoint(self, out: list[str], items: list[_Item], instance: str,
                        after: list[_Item], later: set[str], call: str | None = None) -> None:
        """Lines of one call as a function run under activation checkpointing."""
        made = {o for item in items for o in item.writes}
        args: list[str] = []
        for item in items:
            for name in item.reads:
                if name not in made and not self.operand(name).startswith("self.") \
                        and var(name) not in args:
                    args.append(var(name))
        needed = {n for item in after for n in item.reads} | later
        results = [var(n) for item in items for n in item.writes if n in needed]
        fn = attr(instance) if call is None else (attr(below(instance, call)) or "body")
        shown = instance if call is None else (below(instance, call).lstrip(".") or "the call")
        out.append(f"# {shown}: recomputed in the backward pass")
        out.append(f"def {fn}({', '.join(args)}):")
        self.emit_lines(out, items, "    ", call=call)
        out.append(f"    return ({''.join(r + ', ' for r in results)})")
        out.append(f"({''.join(r + ', ' for r in results)}) = checkpoint("
                   f"{fn}, {''.join(a + ', ' for a in args)}use_reentrant=False)")

    def line(self, code: StageCode, op: Op) -> str | None:
        g = self.graph
        outs = ", ".join(var(o) for o in op.outputs)
        args = [self.operand(i) for i in op.inputs]
        comment = ""
        if op.kind in COMMS:
            axis = op.attr("axis")
            group = f'self.groups["{axis}"]'
            src = g.values[op.inputs[0]].sbp.on(axis)
            dst = g.values[op.outputs[0]].sbp.on(axis)
            if op.outputs[0] in self.synced:
                code.synced.append((self.carriers[op.outputs[0]], axis))
                return None
            if op.outputs[0] in self.inner_gathers:
                return None  # gathered with the rest of its chain, below
            if op.outputs[0] in self.gathers:
                g = self.gathers[op.outputs[0]]
                code.gathered.append((g.param, [list(s) for s in g.steps], g.dtype))
                axes = " then ".join(a for a, _, _ in g.steps)
                return (f"{outs} = self.gathers.use({len(code.gathered) - 1})  # {g.param} "
                        f"gathered over {axes}{', in bf16' if g.dtype else ''}")
            gather = f", dim={src.dim}" + (", whole_grad=True" if op.attr("grad") == "whole"
                                             else "")
            extra = {"all_gather": gather, "reduce_scatter": f", dim={dst.dim}",
                     "slice": f", dim={dst.dim}", "to_partial": f", dim={src.dim}",
                     "all_to_all": f", src={src.dim}, dst={dst.dim}"}.get(op.kind, "")
            expr = f"C.{op.kind}({args[0]}, {group}{extra})"
            if axis == self.context_axis:
                expr = context_comm(op.kind, args[0], group, src, dst, g.axis_size(axis), extra)
            return f"{outs} = {expr}{comment}"
        ins = [g.values[i].type for i in op.inputs]
        attrs = CATALOG[op.kind].full_attrs(op.attrs)
        if op.kind == "reshape":
            attrs["shape_local"] = self.local_shape(op.outputs[0])
        expr = None
        if op.kind == "dropout":
            return f"{outs} = {self.dropout(op, args[0], attrs)}{comment}"
        ring = self.context_lowering(op, args, attrs)
        if ring is not None:
            return f"{outs} = {ring}{comment}"
        vocab = self.vocab_groups(op)
        masked = op.kind == "cross_entropy" and attrs["ignore_index"] >= 0
        if masked:
            # a sum over this rank's counted targets over the microbatch's count of them, on
            # every rank (runtime/functional.py): no division by the ways it is split
            count = f'counted("{self.input_root(op.inputs[1])}")'
            ignore = attrs["ignore_index"]
            expr = (f"C.vocab_parallel_cross_entropy({args[0]}, {args[1]}, {vocab}, "
                    f"ignore_index={ignore}, count={count})" if vocab else
                    f"F.cross_entropy({args[0]}.flatten(0, -2).float(), {args[1]}.flatten(), "
                    f"ignore_index={ignore}, reduction='sum') / {count}")
            return f"{outs} = {expr}{comment}"
        if vocab and op.kind == "embedding":
            expr = f"C.vocab_parallel_embedding({args[0]}, {args[1]}, {vocab})"
        elif vocab:
            expr = f"C.vocab_parallel_cross_entropy({args[0]}, {args[1]}, {vocab})"
        if expr is None and self.kernels == "triton":
            expr = triton_lowering(op.kind, args, attrs, self.plan.spec.parallel.hardware.device)
        if expr is None:
            expr = torch_lowering(op.kind, args, ins, attrs)
        factor = self.reduction_factor(op)
        if factor != 1:
            expr = f"({expr}) / {factor}"
        return f"{outs} = {expr}{comment}"

    def context_lowering(self, op: Op, args: list[str], attrs: dict) -> str | None:
        """Attention and rope split by sequence over the context-parallel axis: the ring, and
        rotation by the global positions of the rank's share (runtime/zigzag.py)."""
        axis = self.context_axis
        if axis is None or op.kind not in ("causal_attention", "rope"):
            return None
        value = self.graph.values[op.inputs[0]]
        seq_dim = value.type.rank - 2
        if value.sbp is None or value.sbp.on(axis) != Sbp("S", seq_dim):
            return None
        group = f'self.groups["{axis}"]'
        if op.kind == "causal_attention":
            return f"ring_attention({args[0]}, {args[1]}, {args[2]}, {group})"
        seq = value.type.shape[seq_dim].as_int()
        return (f"rope({args[0]}, theta={attrs['theta']!r}, "
                f"positions=Z.positions_in({seq}, {group}, {args[0]}.device))")

    def dropout(self, op: Op, x: str, attrs: dict) -> str:
        """Dropout with this rank's place in the whole tensor, so its mask is the slice of the
        mask the single-process program draws (parc.runtime.functional.dropout); a split on
        the context-parallel axis is marked as the load-balanced layout."""
        value = self.graph.values[op.inputs[0]]
        shape = [d.subs({"batch": self.batch}).as_int() for d in value.type.shape]
        splits = ", ".join(f'({dim}, self.groups["{axis}"]'
                           + (", True)" if axis == self.context_axis else ")")
                           for axis, dim in self.splits(op.inputs[0]))
        key = dropout_key(*self.dropout_place[op.outputs[0]])
        return (f"dropout({x}, p={attrs['p']!r}, key={key}, seed={self.plan.spec.train.seed}, "
                f"shape={tuple(shape)}, splits=[{splits}])")

    def input_root(self, name: str) -> str:
        """The model input a value is, through communication (a sliced target)."""
        producer = self.graph.producers()
        while name in producer and producer[name].kind in COMMS:
            name = producer[name].inputs[0]
        assert name in self.graph.inputs, "ignore_index needs targets that are a model input"
        return name

    def vocab_groups(self, op: Op) -> str | None:
        """The process groups (outermost axis first) an embedding table's rows or the logits'
        vocabulary are split over, as code; None when the op sees the whole vocabulary."""
        if op.kind not in ("embedding", "cross_entropy"):
            return None
        value = self.graph.values[op.inputs[1] if op.kind == "embedding" else op.inputs[0]]
        vocab_dim = 0 if op.kind == "embedding" else value.type.rank - 1
        axes = [a for a, s in (value.sbp.axes if value.sbp else ())
                if s.kind == "S" and s.dim == vocab_dim]
        if not axes:
            return None
        return "[" + ", ".join(f'self.groups["{a}"]' for a in axes) + "]"

    def reduction_factor(self, op: Op) -> int:
        """A mean over a shard: divide by the ways the result is a partial sum of it."""
        if op.kind not in REDUCTIONS or self.graph.values[op.outputs[0]].sbp is None:
            return 1
        factor = 1
        out = self.graph.values[op.outputs[0]].sbp
        first = self.graph.values[op.inputs[0]].sbp
        for axis in self.graph.sbp_axes:
            if out.on(axis).kind == "P" and first.on(axis).kind == "S":
                factor *= self.graph.axis_size(axis)
        return factor


def context_comm(kind: str, x: str, group: str, src, dst, size: int, extra: str) -> str:
    """A conversion on the context-parallel axis, whose splits are the load-balanced layout:
    the plain collective on the tensor with its chunks reordered (runtime/zigzag.py), so that
    every rank's two chunks lie side by side in rank order."""
    if kind == "slice":
        return f"Z.take_in({x}, {group}, {dst.dim})"
    if kind == "reduce_scatter":
        return f"C.reduce_scatter(Z.order({x}, {dst.dim}, {size}), {group}{extra})"
    if kind in ("all_gather", "to_partial"):
        return f"Z.unorder(C.{kind}({x}, {group}{extra}), {src.dim}, {size})"
    if kind == "all_to_all":
        return (f"Z.unorder(C.all_to_all(Z.order({x}, {dst.dim}, {size}), {group}{extra}), "
                f"{src.dim}, {size})")
    return f"C.{kind}({x}, {group}{extra})"  # no split on either side


def dtype_name(t: TensorT) -> str:
    return TORCH_DTYPES[t.dtype]
