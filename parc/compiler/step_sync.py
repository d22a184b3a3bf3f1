"""Which gradient all-reduces run once per step rather than in every backward pass (the
runtime's bucketed sync; the cost model charges them so)."""

from __future__ import annotations

from .ir import Graph, Op


def step_syncs(graph: Graph) -> dict[str, str]:
    """The gradient all-reduces that run once per step, after the last backward pass, as
    result -> operand. A parameter's all-reduce qualifies when it is the parameter's only
    reader (or the only reader of its all-reduce over another axis): the parameter's whole
    gradient is then the partial sum it reduces. The others run in each backward pass."""
    params = {p.name for p in graph.params}
    readers: dict[str, list[Op]] = {}
    for op in graph.ops:
        for name in dict.fromkeys(op.inputs):
            readers.setdefault(name, []).append(op)
    synced: dict[str, str] = {}
    for op in graph.ops:
        source = op.inputs[0] if op.inputs else None
        if op.kind == "grad_all_reduce" and (source in params or source in synced) \
                and readers[source] == [op]:
            synced[op.outputs[0]] = source
    return synced
