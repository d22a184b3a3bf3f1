"""Rotary position embedding over [..., seq, head_dim] (pairs of halves, as in LLaMA)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def rope_kernel(X, Y, stride, S, HALF, theta, sign, BLOCK: tl.constexpr):
    """Rotate one row (one position of one head) by its angles; sign = -1 undoes it."""
    row = tl.program_id(0).to(tl.int64)
    pos = (row % S).to(tl.float32)
    cols = tl.arange(0, BLOCK)
    mask = cols < HALF
    inv = tl.exp(-(2.0 * cols.to(tl.float32) / (2.0 * HALF)) * tl.log(theta))
    angle = pos * inv
    cos = tl.cos(angle)
    sin = tl.sin(angle) * sign
    x1 = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + row * stride + HALF + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride + cols, (x1 * cos - x2 * sin).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + row * stride + HALF + cols, (x1 * sin + x2 * cos).to(Y.dtype.element_ty),
             mask=mask)


def _rotate(x: torch.Tensor, theta: float, sign: float) -> torch.Tensor:
    seq, dim = x.shape[-2], x.shape[-1]
    flat = x.reshape(-1, dim).contiguous()
    out = torch.empty_like(flat)
    half = dim // 2
    rope_kernel[(flat.shape[0],)](flat, out, flat.stride(0), seq, half, theta, sign,
                                  BLOCK=triton.next_power_of_2(half))
    return out.view(x.shape)


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, theta):
        ctx.theta = theta
        return _rotate(x, theta, 1.0)

    @staticmethod
    def backward(ctx, grad):
        return _rotate(grad, ctx.theta, -1.0), None  # a rotation's transpose is its inverse


def rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    return _Rope.apply(x, theta)
