"""fuse: group chains of elementwise ops into one kernel each (`kernel=K` on every member).

An op joins the group of the op that produced its input when that input is used by nothing
else and has the op's own shape, so the intermediate never needs to exist in memory: a bias
add and the GELU after it, or a bias add and the residual add after it. Groups never span a
communication op (those are not elementwise) or a stage boundary. The row-wise ops (norms,
softmax, cross-entropy, rope) have hand-written kernels of their own.
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import Graph

ELEMENTWISE = {"add", "sub", "mul", "div", "scale", "gelu", "silu", "relu", "tanh", "sigmoid",
               "exp"}


def fuse(graph: Graph) -> Graph:
    uses: dict[str, int] = {}
    for op in graph.ops:
        for name in op.inputs:
            uses[name] = uses.get(name, 0) + 1
    for _, name in graph.outputs:
        uses[name] = uses.get(name, 0) + 1
    producer = {out: i for i, op in enumerate(graph.ops) for out in op.outputs}
    group: dict[int, int] = {}  # op index -> group id (the index of its first member)
    for i, op in enumerate(graph.ops):
        if op.kind not in ELEMENTWISE:
            continue
        out = graph.values[op.outputs[0]]
        for name in op.inputs:
            j = producer.get(name)
            if j is None or graph.ops[j].kind not in ELEMENTWISE or uses.get(name) != 1:
                continue
            value = graph.values[name]
            if value.type != out.type or value.stage != out.stage or value.sbp != out.sbp:
                continue
            mine = group.setdefault(j, j)
            if i in group and group[i] != mine:  # two chains meet here: merge them
                old = group[i]
                for k, g in group.items():
                    if g == old:
                        group[k] = mine
            group[i] = mine
    sizes: dict[int, int] = {}
    for g in group.values():
        sizes[g] = sizes.get(g, 0) + 1
    ids = {g: n for n, g in enumerate(sorted(g for g, size in sizes.items() if size > 1))}
    ops = []
    for i, op in enumerate(graph.ops):
        g = group.get(i)
        if g in ids:
            op = replace(op, attrs=tuple(a for a in op.attrs if a[0] != "kernel") +
                         (("kernel", ids[g]),))
        ops.append(op)
    return graph.with_(ops=tuple(ops))
