"""The backward of a zero-bubble schedule, split in two passes over one autograd graph.

B computes the gradients of the stage's inputs (what the previous stage waits for) and, on the
way, captures the gradient arriving at each *weight node*: an autograd node with at least one
input that comes only from parameters (a matmul's weight, a norm's scale, a bias, through any
cast or transpose) and at least one that does not. W then runs each weight node again with that
gradient, restricted to its parameter inputs, and carries the result down the parameter-only
subgraphs into `.grad`. So W costs the weight-gradient work and B the input-gradient work, as
the cost model charges them, instead of W traversing the whole graph a second time.

A weight node that B never reached (a stage without differentiable inputs, an embedding of
token ids) has its parameters' gradients computed by one ordinary backward in W.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.autograd.graph import GradientEdge


@dataclass
class Split:
    """What B leaves for W."""

    outputs: list[torch.Tensor]
    grads: list[torch.Tensor]
    params: list[torch.Tensor]
    captured: dict = field(default_factory=dict)  # weight node -> its output gradients
    weight_nodes: list = field(default_factory=list)
    reached: set = field(default_factory=set)  # ids of the parameters the graph uses
    param_only: dict = field(default_factory=dict)  # memo of _param_only


def _param_only(node, params: set[int], memo: dict) -> bool:
    """Whether every path from `node` ends in a parameter (memo: id -> (node, answer); the
    node is kept so its id cannot be reused)."""
    stack = [(node, False)]
    while stack:  # iterative post-order: graphs are deep
        n, expanded = stack.pop()
        if id(n) in memo:
            continue
        children = [m for m, _ in n.next_functions if m is not None]
        if not expanded:
            stack.append((n, True))
            stack.extend((m, False) for m in children if id(m) not in memo)
        elif hasattr(n, "variable"):  # AccumulateGrad: a leaf
            memo[id(n)] = (n, id(n.variable) in params)
        else:
            memo[id(n)] = (n, bool(children) and all(memo[id(m)][1] for m in children))
    return memo[id(node)][1]


def _weight_nodes(outputs: list[torch.Tensor], params: set[int], memo: dict) -> tuple[list, set]:
    """The weight nodes of the graph behind `outputs`, and every parameter it reaches."""
    seen: set[int] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    found, reached = [], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if _param_only(node, params, memo):
            reached |= _leaves(node, params)
            continue
        children = [m for m, _ in node.next_functions if m is not None]
        if any(_param_only(m, params, memo) for m in children):
            found.append(node)
        stack.extend(children)
    return found, reached


def backward_input(outputs: list[torch.Tensor], grads: list[torch.Tensor],
                   inputs: list[torch.Tensor], params: list[torch.Tensor]) -> tuple[list, Split]:
    """B: the gradients of `inputs` (None where unused), and the state W needs."""
    split = Split(outputs, grads, params)
    ids = {id(p) for p in params}
    split.weight_nodes, split.reached = _weight_nodes(outputs, ids, split.param_only)
    handles = []
    for node in split.weight_nodes:
        def keep(grad_outputs, node=node):
            split.captured[node] = grad_outputs
        handles.append(node.register_prehook(keep))
    try:
        result = list(torch.autograd.grad(outputs, inputs, grads, retain_graph=True,
                                          allow_unused=True)) if inputs else []
    finally:
        for handle in handles:
            handle.remove()
    return result, split


def _leaves(node, params: set[int]) -> set[int]:
    """The parameters a parameter-only subgraph ends in."""
    out, stack, seen = set(), [node], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if hasattr(n, "variable"):
            out.add(id(n.variable))
        stack.extend(m for m, _ in n.next_functions if m is not None)
    return out & params


def backward_weight(split: Split) -> None:
    """W: accumulate every parameter's gradient into `.grad`.

    Every path into a parameter enters its parameter-only subgraph at a weight node, so a
    parameter with one weight node takes its whole gradient from that node's captured output
    gradient: one small backward per weight node, into its own parameters. A parameter with
    several (a weight used twice in the stage) or whose node B did not reach is finished by one
    ordinary backward instead, which would otherwise count the shared paths twice.
    """
    ids = {id(p) for p in split.params}
    by_id = {id(p): p for p in split.params}
    memo = split.param_only
    mine: dict = {}  # weight node -> ids of the parameters behind its parameter-only inputs
    users: dict[int, int] = {}
    for node in split.weight_nodes:
        found: set[int] = set()
        for m, _ in node.next_functions:
            if m is not None and _param_only(m, ids, memo):
                found |= _leaves(m, ids)
        mine[node] = found
        for pid in found:
            users[pid] = users.get(pid, 0) + 1
    covered = {pid for node in split.captured for pid in mine[node] if users[pid] == 1}
    whole = split.reached - covered
    for node, grad_outputs in split.captured.items():
        targets = [by_id[pid] for pid in mine[node] if pid in covered]
        given = [(GradientEdge(node, i), g) for i, g in enumerate(grad_outputs) if g is not None]
        if targets and given:
            torch.autograd.backward([e for e, _ in given], [g for _, g in given], inputs=targets,
                                    retain_graph=True)
    if whole:
        torch.autograd.backward(split.outputs, split.grads,
                                inputs=[p for p in split.params if id(p) in whole])
