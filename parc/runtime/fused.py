"""Launching the generated kernels of fused elementwise groups, as autograd functions."""

from __future__ import annotations

import functools

import torch

BLOCK = 1024


def _grid(n: int) -> tuple[int]:
    return ((n + BLOCK - 1) // BLOCK,)


def fused_forward(kernel, ctx, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run a group's forward kernel over the broadcast shape of its operands."""
    shape = torch.broadcast_shapes(*(t.shape for t in inputs))
    flat = [t.expand(shape).contiguous() for t in inputs]
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in inputs))
    out = torch.empty(shape, dtype=dtype, device=inputs[0].device)
    n = out.numel()
    kernel[_grid(n)](*flat, out, n, BLOCK=BLOCK)
    ctx.save_for_backward(*flat)
    ctx.meta = [(t.shape, t.dtype, t.requires_grad) for t in inputs]
    return out


def fused_backward(kernel, ctx, grad: torch.Tensor) -> tuple:
    flat = ctx.saved_tensors
    grad = grad.contiguous()
    grads = [torch.empty(grad.shape, dtype=torch.float32, device=grad.device) for _ in flat]
    n = grad.numel()
    kernel[_grid(n)](*flat, grad, *grads, n, BLOCK=BLOCK)
    out = []
    for g, (shape, dtype, needs) in zip(grads, ctx.meta):
        out.append(g.sum_to_size(shape).to(dtype) if needs else None)
    return tuple(out)
