"""The backward of a zero-bubble schedule, split in two passes over one autograd graph.

B computes the gradients of the stage's inputs (what the previous stage waits for) and, on the
way, captures the gradient arriving at each matmul that consumes a weight (through any cast,
transpose or gradient all-reduce): a *weight node*. W then runs each of those nodes again from
that gradient, restricted to its weight, and carries the result into `.grad`. So W costs the
matmuls' weight-gradient work and B the rest, as the cost model charges them, instead of W
traversing the whole graph a second time.

Every other parameter (norm scales, biases, embeddings, a weight two nodes share or an output
reaches directly) gets its gradient in B, from the same pass (an addmm's bias goes with its
weight to W). In the first stage, whose inputs are token ids, nothing is
an activation: B is one whole backward and W has nothing left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.autograd.graph import GradientEdge

# autograd nodes whose weight gradient is worth deferring: the matmuls
DEFERRED = {"MmBackward0", "BmmBackward0", "AddmmBackward0"}


@dataclass
class Split:
    """What B leaves for W."""

    outputs: list = field(default_factory=list)
    grads: list = field(default_factory=list)
    captured: dict = field(default_factory=dict)  # weight node -> its output gradients
    targets: dict = field(default_factory=dict)  # weight node -> the parameters it finishes


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


def _weight_nodes(outputs: list[torch.Tensor], params: set[int],
                  memo: dict) -> tuple[list, set, set]:
    """The weight nodes of the graph behind `outputs`, every parameter it reaches, and those an
    output reaches through parameters only (an output that is a function of weights alone)."""
    seen: set[int] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    direct: set[int] = set()
    for node in stack:
        if _param_only(node, params, memo):
            direct |= _leaves(node, params)
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
    return found, reached, direct


def backward_input(outputs: list[torch.Tensor], grads: list[torch.Tensor],
                   inputs: list[torch.Tensor], params: list[torch.Tensor]) -> tuple[list, Split]:
    """B: the gradients of `inputs` (leaf tensors), every parameter gradient but the deferred
    ones accumulated, and the state W needs."""
    ids = {id(p) for p in params}
    by_id = {id(p): p for p in params}
    memo: dict = {}
    nodes, reached, direct = _weight_nodes(outputs, ids, memo)
    owned: dict = {}  # weight node -> ids of the parameters behind its parameter-only inputs
    users: dict[int, int] = {pid: 1 for pid in direct}  # an output is a user too
    for node in nodes:
        found: set[int] = set()
        for m, _ in node.next_functions:
            if m is not None and _param_only(m, ids, memo):
                found |= _leaves(m, ids)
        owned[node] = found
        for pid in found:
            users[pid] = users.get(pid, 0) + 1
    split = Split(outputs, grads)
    for node in nodes:
        if type(node).__name__ in DEFERRED:
            mine = [by_id[pid] for pid in owned[node] if users[pid] == 1]
            if mine:
                split.targets[node] = mine
    deferred = {id(p) for ps in split.targets.values() for p in ps}
    now = [p for p in params if id(p) in reached and id(p) not in deferred]
    handles = []
    for node in split.targets:
        def keep(grad_outputs, node=node):
            split.captured[node] = grad_outputs
        handles.append(node.register_prehook(keep))
    try:
        if inputs or now:
            torch.autograd.backward(outputs, grads, inputs=inputs + now, retain_graph=True)
    finally:
        for handle in handles:
            handle.remove()
    return [t.grad for t in inputs], split


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
    """W: each deferred matmul again from the gradient B captured, into its weight only. A
    node B did not reach (none should: each leads to a stage input) falls back to one ordinary
    backward into its weights."""
    missed = []
    for node, targets in split.targets.items():
        grad_outputs = split.captured.get(node)
        if grad_outputs is None:
            missed += targets
            continue
        given = [(GradientEdge(node, i), g) for i, g in enumerate(grad_outputs) if g is not None]
        torch.autograd.backward([e for e, _ in given], [g for _, g in given], inputs=targets,
                                retain_graph=True)
    if missed:
        torch.autograd.backward(split.outputs, split.grads, inputs=missed)
    # the graph and the captured gradients go with the last references to them
    split.captured.clear()
    split.targets.clear()
    split.outputs, split.grads = [], []
