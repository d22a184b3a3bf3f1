"""fuse: group chains of elementwise ops, and the norm they feed, into one kernel each
(`kernel=K` on every member).

An op joins the group of the op that produced its input when that input is used by nothing
else and has the op's own shape, so the intermediate never needs to exist in memory: a bias
add and the GELU after it, or a bias add and the residual add after it. A layer or RMS norm
then joins the group that produced its input even when that value has other users (the
residual stream): the kernel computes the sum, stores it once and normalises it in the same
pass over the row. Groups never span a communication op (those are not elementwise), a stage
boundary or two recomputed calls. Softmax, cross-entropy and rope have hand-written kernels,
and so does causal attention (on CUDA plans: ops/lowering.py).
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import Graph

ELEMENTWISE = {"add", "sub", "mul", "div", "scale", "gelu", "silu", "relu", "tanh", "sigmoid",
               "exp"}
NORMS = {"layer_norm", "rms_norm"}


def recompute_instance(scope: str, names: tuple[str, ...] | set[str]) -> str | None:
    """The call instance (`block[3]`) of `scope` whose activations are recomputed, if any."""
    parts = scope.split(".") if scope else []
    for k, part in enumerate(parts):
        if part.split("[", 1)[0] in names:
            return ".".join(parts[:k + 1])
    return None


def fuse(graph: Graph, recompute: tuple[str, ...] = ()) -> Graph:
    """Mark the groups; `recompute` names the calls run under activation checkpointing."""
    uses: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for name in op.inputs:
            uses.setdefault(name, []).append(i)
    outputs = {name for _, name in graph.outputs}
    producer = {out: i for i, op in enumerate(graph.ops) for out in op.outputs}
    names = set(recompute) - {"all"}
    group: dict[int, int] = {}  # op index -> group id (the index of its first member)
    for i, op in enumerate(graph.ops):
        if op.kind not in ELEMENTWISE:
            continue
        out = graph.values[op.outputs[0]]
        for name in op.inputs:
            j = producer.get(name)
            if j is None or graph.ops[j].kind not in ELEMENTWISE or len(uses[name]) != 1 \
                    or name in outputs:
                continue
            value = graph.values[name]
            if value.type != out.type or value.stage != out.stage or value.sbp != out.sbp:
                continue
            if recompute_instance(graph.ops[j].scope, names) != \
                    recompute_instance(op.scope, names):
                continue
            mine = group.setdefault(j, j)
            if i in group and group[i] != mine:  # two chains meet here: merge them
                old = group[i]
                for k, g in group.items():
                    if g == old:
                        group[k] = mine
            group[i] = mine
    for i, op in enumerate(graph.ops):
        if op.kind not in NORMS:
            continue
        h = op.inputs[0]
        j = producer.get(h)
        if j is None or graph.ops[j].kind not in ELEMENTWISE:
            continue
        value, out = graph.values[h], graph.values[op.outputs[0]]
        if value.type != out.type or value.stage != out.stage or value.sbp != out.sbp:
            continue
        if any(j < k < i for k in uses[h]):  # the sum is needed before the norm runs
            continue
        g = group.setdefault(j, j)
        members = [k for k, m in group.items() if m == g]
        if any(graph.ops[k].kind in NORMS for k in members):  # one norm per kernel
            continue
        instances = {recompute_instance(graph.ops[k].scope, names) for k in members + [i]}
        if len(instances) > 1:
            if len(members) == 1:
                del group[j]
            continue
        group[i] = g
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
