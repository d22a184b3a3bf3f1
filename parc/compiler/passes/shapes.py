"""shapes: infer every op's result types through the op catalog and check them.

After `elaborate` the types are already right; this pass re-derives them so an IR written by
hand or by another tool is checked before anything relies on it.
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import Graph, result_types


def shapes(graph: Graph) -> Graph:
    values = dict(graph.values)
    for op in graph.ops:
        try:
            outs = result_types(op, [values[i].type for i in op.inputs])
        except ValueError as exc:
            raise ValueError(f"{op.kind} @{op.scope}: {exc}") from None
        if len(outs) != len(op.outputs):
            raise ValueError(f"{op.kind} @{op.scope}: {len(outs)} results, "
                             f"{len(op.outputs)} names")
        for name, type_ in zip(op.outputs, outs):
            values[name] = replace(values[name], type=type_)
    return graph.with_(values=values)
