"""The IR verifier: SSA, types, SBP consistency per mesh axis, stage order.

Runs after every pass in the tests and under `--verify`; a failure is a compiler bug.
"""

from __future__ import annotations

from ..ops.catalog import CATALOG
from ..ops.comm import COMMS
from ..ops.dims import Dim
from ..ops.sbp import Sbp
from ..ops.signatures import context_signatures, signatures
from .ir import Graph, result_types


class VerifyError(AssertionError):
    pass


def verify(graph: Graph) -> None:
    defined: set[str] = set()

    def define(name: str, where: str) -> None:
        if name in defined:
            raise VerifyError(f"{where}: %{name} is defined twice")
        if name not in graph.values:
            raise VerifyError(f"{where}: %{name} has no type")
        defined.add(name)

    for name in graph.inputs:
        define(name, "input")
    for param in graph.params:
        define(param.name, "param")
    for index, op in enumerate(graph.ops):
        where = f"op {index} ({op.kind} @{op.scope})"
        for name in op.inputs:
            if name not in defined:
                raise VerifyError(f"{where}: %{name} is used before it is defined")
        _check_types(graph, op, where)
        for name in op.outputs:
            define(name, where)
        _check_sbp(graph, op, where)
        _check_stages(graph, op, where)
    for out, name in graph.outputs:
        if name not in defined:
            raise VerifyError(f"output {out}: %{name} is not defined")
    if set(graph.values) != defined:
        extra = sorted(set(graph.values) - defined)[:3]
        raise VerifyError(f"values without a definition: {extra}")
    _check_divisible(graph)


def _check_types(graph: Graph, op, where: str) -> None:
    ins = [graph.values[i].type for i in op.inputs]
    outs = [graph.values[o].type for o in op.outputs]
    if op.kind in COMMS and len(ins) != 1:
        raise VerifyError(f"{where}: a communication op has one operand")
    try:
        expected = result_types(op, ins)
    except ValueError as exc:
        raise VerifyError(f"{where}: {exc}") from None
    if expected != outs:
        raise VerifyError(f"{where}: results should be {[str(t) for t in expected]}, "
                          f"are {[str(t) for t in outs]}")


def _check_sbp(graph: Graph, op, where: str) -> None:
    vals = [graph.values[n] for n in op.inputs + op.outputs]
    if any(v.sbp is None for v in vals):
        if any(graph.values[o].sbp is not None for o in op.outputs):
            raise VerifyError(f"{where}: results have SBP but some operands do not")
        return  # before the sbp pass only inputs and parameters carry SBP
    in_sbps = op.in_sbp or tuple(graph.values[i].sbp for i in op.inputs)
    if len(in_sbps) != len(op.inputs):
        raise VerifyError(f"{where}: needs() lists {len(in_sbps)} operands")
    for axis in graph.sbp_axes:
        ins = tuple(s.on(axis) for s in in_sbps)
        outs = tuple(graph.values[o].sbp.on(axis) for o in op.outputs)
        if op.kind in COMMS:
            _check_comm(op, axis, ins[0], outs[0], where)
            continue
        types_in = [graph.values[i].type for i in op.inputs]
        types_out = [graph.values[o].type for o in op.outputs]
        spec = CATALOG[op.kind]
        attrs = spec.full_attrs(op.attrs)
        # the context-parallel axis's signatures: the graph does not say which axis that is
        # (as with sequence parallelism), so they are valid on any
        valid = signatures(op.kind, types_in, types_out, attrs) + context_signatures(
            op.kind, types_in)
        if (ins, outs) not in valid:
            shown = ", ".join(str(s) for s in ins) + " -> " + ", ".join(str(s) for s in outs)
            raise VerifyError(f"{where}: ({shown}) is not a valid signature on `{axis}`")


def _check_comm(op, axis: str, src: Sbp, dst: Sbp, where: str) -> None:
    comm = COMMS[op.kind]
    if op.attr("axis") != axis:
        if src != dst:
            raise VerifyError(f"{where}: SBP changes on `{axis}`, but the op works on "
                              f"`{op.attr('axis')}`")
        return
    if (src.kind, dst.kind) != (comm.src, comm.dst):
        raise VerifyError(f"{where}: {op.kind} converts {comm.src}->{comm.dst}, not {src}->{dst}")
    if op.kind == "all_to_all" and src.dim == dst.dim:
        raise VerifyError(f"{where}: all_to_all between equal splits")


def _check_stages(graph: Graph, op, where: str) -> None:
    out_stages = {graph.values[o].stage for o in op.outputs}
    if len(out_stages) > 1:
        raise VerifyError(f"{where}: results on different stages")
    (stage,) = out_stages
    if stage is None:
        return
    for name in op.inputs:
        before = graph.values[name].stage
        if before is not None and before > stage:
            raise VerifyError(f"{where}: reads %{name} of stage {before} on stage {stage}")


def _check_divisible(graph: Graph) -> None:
    sizes = dict(graph.mesh)
    for v in graph.values.values():
        if v.sbp is None:
            continue
        shape = graph.concrete(v.type).shape
        splits: dict[int, int] = {}
        for axis in graph.sbp_axes:
            s = v.sbp.on(axis)
            if s.kind == "S":
                if not 0 <= s.dim < len(shape):
                    raise VerifyError(f"%{v.name}: {s}@{axis} is outside rank {len(shape)}")
                splits[s.dim] = splits.get(s.dim, 1) * sizes[axis]
        for dim, ways in splits.items():
            if Dim.of(shape[dim]).divisible_by(ways) is False:
                raise VerifyError(f"%{v.name}: dim {dim} ({shape[dim]}) splits {ways} ways")
