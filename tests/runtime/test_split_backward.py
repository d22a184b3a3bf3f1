"""The split backward of zero-bubble schedules: B then W gives exactly the gradients of one
backward, and W runs only the weight branches of the graph."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from parc.runtime.collectives import grad_all_reduce
from parc.runtime.split_backward import backward_input, backward_weight

V, D = 11, 8


@pytest.fixture
def params():
    torch.manual_seed(0)
    names = {"wte": (V, D), "w1": (D, D), "b1": (D,), "lw": (D,), "lb": (D,), "head": (V, D)}
    return {n: torch.randn(*shape, requires_grad=True) for n, shape in names.items()}


def stage(p, x, tokens, tied=True):
    """Embedding and head (tied: one parameter used twice), a cast and a custom autograd
    Function on the weight's way to its matmul, a bias, a residual, a layer norm."""
    h = F.embedding(tokens, p["wte"]) + x
    w = grad_all_reduce(p["w1"], None).to(torch.float64).to(torch.float32)
    h = h + F.gelu(h @ w + p["b1"])
    h = F.layer_norm(h, (D,), p["lw"], p["lb"])
    head = p["wte"] if tied else p["head"]
    return [F.cross_entropy((h @ head.t()).flatten(0, 1), tokens.flatten())]


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("differentiable_input", [True, False])
def test_b_then_w_equals_one_backward(params, differentiable_input, tied):
    tokens = torch.randint(0, V, (2, 5))
    x = torch.randn(2, 5, D, requires_grad=differentiable_input)
    inputs = [x] if differentiable_input else []
    if tied:
        del params["head"]
    plist = list(params.values())
    input_grads, split = backward_input(stage(params, x, tokens, tied), [torch.ones(())],
                                        inputs, plist)
    deferred = {"w1"} | ({"head"} if not tied else set()) if differentiable_input else set()
    # B leaves the matmul weights to W (a tied one, used twice, is finished in B), and in a
    # stage without differentiable inputs it is one whole backward
    assert {n for n, p in params.items() if p.grad is None} == deferred
    assert len(split.captured) == len(deferred)
    backward_weight(split)
    want = torch.autograd.grad(stage(params, x, tokens, tied), plist + inputs,
                               [torch.ones(())])
    for got, ref in zip([p.grad for p in plist] + input_grads, want):
        torch.testing.assert_close(got, ref)


def test_w_runs_only_the_weight_branches(params):
    """W never computes an activation gradient again: count the matmul backward's work."""
    tokens = torch.randint(0, V, (2, 5))
    x = torch.randn(2, 5, D, requires_grad=True)
    calls = []
    mm = torch.ops.aten.mm.default
    _, split = backward_input(stage(params, x, tokens, tied=False), [torch.ones(())], [x],
                              list(params.values()))
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func == mm:
                calls.append(tuple(args[0].shape) + tuple(args[1].shape))
            return func(*args, **(kwargs or {}))

    with Count():
        backward_weight(split)
    # one weight-gradient matmul per matmul of the stage (w1 and the head), nothing else: a
    # whole second backward would also run the head's input-gradient matmul
    assert len(calls) == 2


def test_a_weight_node_b_never_reached_is_finished_in_w(params):
    """A matmul whose activation comes from a leaf B was not asked about (not a stage input)
    still gets its weight gradient."""
    del params["head"]
    params["w2"] = torch.randn(D, D, requires_grad=True)
    tokens = torch.randint(0, V, (2, 5))
    x = torch.randn(2, 5, D, requires_grad=True)
    other = torch.randn(2, 5, D, requires_grad=True)  # requires grad, but is no input of B
    plist = list(params.values())

    def run():
        return [stage(params, x, tokens)[0] + (other @ params["w2"]).sum()]

    _, split = backward_input(run(), [torch.ones(())], [x], plist)
    assert params["w2"].grad is None and len(split.captured) == 1  # w1's matmul only
    backward_weight(split)
    want = torch.autograd.grad(run(), plist, [torch.ones(())])
    for p, ref in zip(plist, want):
        torch.testing.assert_close(p.grad, ref)


def test_a_weight_an_output_uses_directly_is_not_deferred():
    """Stage outputs [x @ w, w * 1]: w's gradient has a share that no matmul carries."""
    w = torch.randn(D, D, requires_grad=True)
    x = torch.randn(3, D, requires_grad=True)

    def run():
        return [x @ w, w * 1.0]

    grads = [torch.randn(3, D), torch.randn(D, D)]
    (gx,), split = backward_input(run(), grads, [x], [w])
    backward_weight(split)
    want = torch.autograd.grad(run(), [w, x], grads)
    torch.testing.assert_close(w.grad, want[0])
    torch.testing.assert_close(gx, want[1])
    assert not split.captured and not split.outputs  # W let go of the graph
