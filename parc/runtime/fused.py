"""Launching the generated kernels of fused groups, as autograd functions.

An operand whose shape is a suffix of the group's shape (a bias, a position table) is passed
as it is and read at `offset % numel`, so it is never expanded to the group's shape in memory;
other broadcasts are expanded. Elementwise groups run one program per block of elements; row
groups (a chain ending in a norm) one program per row of the last dim, and backward one per
block of rows, each storing a partial row of the weight gradients that is summed here.
"""

from __future__ import annotations

import functools

import torch
import triton

from ..stdlib.kernels.launch import partials, row_warps

BLOCK = 1024


def _grid(n: int) -> tuple[int]:
    return ((n + BLOCK - 1) // BLOCK,)


def _operand(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """`t` laid out so that element i of the broadcast result reads flat index i % numel."""
    dims = list(t.shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    if not dims or tuple(dims) == tuple(shape[len(shape) - len(dims):]):
        return t.contiguous().reshape(dims)
    return t.expand(shape).contiguous()


def _prepare(ctx, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Size, list, torch.dtype]:
    shape = torch.broadcast_shapes(*(t.shape for t in inputs))
    flat = [_operand(t, shape) for t in inputs]
    ctx.meta = [(t.shape, t.dtype, t.requires_grad) for t in inputs]
    ctx.shape = shape
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in inputs))
    return shape, flat, dtype


def _sizes(flat) -> list[int]:
    return [t.numel() for t in flat]


def _summed(grads, meta) -> list:
    return [g.sum_to_size(shape).to(dtype) if needs else None
            for g, (shape, dtype, needs) in zip(grads, meta)]


def fused_forward(kernel, ctx, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run an elementwise group's forward kernel over the broadcast shape of its operands."""
    shape, flat, dtype = _prepare(ctx, inputs)
    out = torch.empty(shape, dtype=dtype, device=inputs[0].device)
    n = out.numel()
    kernel[_grid(n)](*flat, *_sizes(flat), out, n, BLOCK=BLOCK)
    ctx.save_for_backward(*flat)
    return out


def fused_backward(kernel, ctx, grad: torch.Tensor) -> tuple:
    flat = ctx.saved_tensors
    grad = grad.contiguous()
    grads = [torch.empty(ctx.shape, dtype=torch.float32, device=grad.device) for _ in flat]
    n = grad.numel()
    kernel[_grid(n)](*flat, *_sizes(flat), grad, *grads, n, BLOCK=BLOCK)
    return tuple(_summed(grads, ctx.meta))


def row_forward(kernel, ctx, inputs: tuple[torch.Tensor, ...], weights: tuple[torch.Tensor, ...],
                keeps_sum: bool):
    """A row group: the chain's result `h` normalised over the last dim with `weights` (the
    norm's weight, and bias for a layer norm). Returns `(h, y)` when `keeps_sum`, else `y`."""
    shape, flat, dtype = _prepare(ctx, inputs)
    device = inputs[0].device
    n = shape[-1]
    rows = max(1, torch.Size(shape).numel() // n)
    y = torch.empty(shape, dtype=dtype, device=device)
    h = [torch.empty(shape, dtype=dtype, device=device)] if keeps_sum else []
    weights = tuple(w.contiguous() for w in weights)
    block = triton.next_power_of_2(n)
    kernel[(rows,)](*flat, *_sizes(flat), *weights, *h, y, n, BLOCK=block,
                    num_warps=row_warps(block))
    ctx.save_for_backward(*flat, *weights)
    ctx.inputs, ctx.keeps_sum, ctx.rows = len(flat), keeps_sum, rows
    ctx.weight_meta = [(w.dtype, w.requires_grad) for w in weights]
    return (h[0], y) if keeps_sum else y


def row_backward(kernel, ctx, grads: tuple[torch.Tensor, ...]) -> tuple:
    saved = ctx.saved_tensors
    flat, weights = saved[:ctx.inputs], saved[ctx.inputs:]
    device = flat[0].device
    shape, n = ctx.shape, ctx.shape[-1]
    dh, dy = grads if ctx.keeps_sum else (None, grads[0])
    dy = dy.contiguous() if dy is not None else torch.zeros(shape, device=device)
    extra = [dh.contiguous() if dh is not None else torch.zeros(shape, device=device)] \
        if ctx.keeps_sum else []
    dx = [torch.empty(shape, dtype=torch.float32, device=device) for _ in flat]
    programs, per_program = partials(ctx.rows, device)
    dw = [torch.empty(programs, n, dtype=torch.float32, device=device) for _ in weights]
    block = triton.next_power_of_2(n)
    kernel[(programs,)](*flat, *_sizes(flat), *weights, dy, *extra, *dx, *dw, n, ctx.rows,
                        per_program, BLOCK=block, num_warps=row_warps(block))
    out = _summed(dx, ctx.meta)
    out += [g.sum(0).to(dtype) if needs else None for g, (dtype, needs) in
            zip(dw, ctx.weight_meta)]
    return tuple(out)
