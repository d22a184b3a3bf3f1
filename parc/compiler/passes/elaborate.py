"""elaborate: the checked spec's model (defs inlined, loops unrolled, shapes known) as a Graph."""

from __future__ import annotations

from ...dsl.spec import Spec
from ..ir import Graph, Op, Param, Value


def elaborate(spec: Spec) -> Graph:
    model = spec.model
    assert model is not None, "elaborate needs a spec with a model"
    names: dict[int, str] = {}
    for i in model.inputs:
        names[i.value] = i.name
    for p in model.params:
        names[p.value] = p.name
    for tensor_id in model.values:
        names.setdefault(tensor_id, str(tensor_id))
    annotated = spec.parallel.sbp if spec.parallel is not None else {}
    annotated = {k: v for k, v in annotated.items() if v.axes}  # no SBP axes: nothing to say
    values = {names[t]: Value(names[t], type_, annotated.get(names[t]))
              for t, type_ in model.values.items()}
    ops = tuple(
        Op(op.kind, tuple(names[i] for i in op.inputs), tuple(names[o] for o in op.outputs),
           tuple(op.attrs), op.scope, None, op.span)
        for op in model.ops)
    used = {name for op in ops for name in op.inputs + op.outputs}
    used |= {names[i.value] for i in model.inputs} | {names[p.value] for p in model.params}
    used |= {names[v] for v in model.outputs.values()}
    values = {k: v for k, v in values.items() if k in used}
    mesh = spec.parallel.mesh if spec.parallel is not None else ()
    bindings = (("batch", spec.train.microbatch_size),) if spec.train is not None else ()
    return Graph(
        name=model.name, mesh=tuple(mesh), bindings=bindings, values=values,
        inputs=tuple(i.name for i in model.inputs),
        params=tuple(Param(p.name, p.init) for p in model.params), ops=ops,
        outputs=tuple((name, names[v]) for name, v in model.outputs.items()))
