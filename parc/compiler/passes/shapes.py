"""shapes: infer every op's result types through the op catalog and check them.

After `elaborate` the types are already right; this pass re-derives them so an IR written by
hand or by another tool is checked before anything relies on it.
"""

from __future__ import annotations

from dataclasses import replace

from ...ops.catalog import CATALOG, ShapeError
from ...ops.comm import COMMS
from ..ir import Graph


def shapes(graph: Graph) -> Graph:
    values = dict(graph.values)
    for op in graph.ops:
        ins = [values[i].type for i in op.inputs]
        if op.kind in COMMS:
            outs = ins
        else:
            if op.kind not in CATALOG:
                raise ValueError(f"unknown op `{op.kind}` (@{op.scope})")
            spec = CATALOG[op.kind]
            attrs = spec.full_attrs(op.attrs)
            try:
                outs = spec.infer(ins, attrs)
            except ShapeError as exc:
                raise ValueError(f"{op.kind} @{op.scope}: {exc}") from None
        if len(outs) != len(op.outputs):
            raise ValueError(f"{op.kind} @{op.scope}: {len(outs)} results, "
                             f"{len(op.outputs)} names")
        for name, type_ in zip(op.outputs, outs):
            values[name] = replace(values[name], type=type_)
    return graph.with_(values=values)
