"""Lowering peepholes: ops the generated program computes as one call.

A matmul by a weight matrix whose only reader adds a bias vector is one `F.linear` (addmm on
2-D inputs: one kernel, and one autograd node instead of two), as torch's nn.Linear does.
The emitter writes it so and the cost model charges one op for the pair.
"""

from __future__ import annotations

from .ir import Graph, Op


def linear_pairs(graph: Graph, ops: list[Op] | tuple[Op, ...]) -> dict[str, Op]:
    """matmul result -> the add that takes it and a bias, for the pairs that become one
    `F.linear`: the matmul's right operand is 2-D, its result has that add as its one reader,
    and the add's other operand is a vector as long as the result's last dim."""
    readers: dict[str, list[Op]] = {}
    for op in graph.ops:
        for name in op.inputs:
            readers.setdefault(name, []).append(op)
    out: dict[str, Op] = {}
    for op in ops:
        if op.kind != "matmul" or op.attr("kernel") is not None:
            continue
        (result,) = op.outputs
        weight = graph.values[op.inputs[1]].type
        users = readers.get(result, [])
        if weight.rank != 2 or len(users) != 1 or users[0].kind != "add":
            continue
        add = users[0]
        if add.attr("kernel") is not None or add.inputs[0] != result or \
                graph.values[add.outputs[0]].stage != graph.values[result].stage:
            continue
        bias = graph.values[add.inputs[1]].type
        if bias.rank == 1 and bias.shape[0] == weight.shape[1] and \
                graph.values[add.outputs[0]].type == graph.values[result].type:
            out[result] = add
    return out
