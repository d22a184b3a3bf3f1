"""Mean softmax cross-entropy over a large vocabulary, one program per row, streaming over the
vocabulary in blocks with an online max and sum: the softmax is never held whole."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import row_warps


@triton.jit
def cross_entropy_fwd(Logits, Targets, Loss, Lse, stride, V, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = Logits + row * stride
    m = -float("inf")
    s = 0.0
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(base + cols, mask=cols < V, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new
    lse = m + tl.log(s)
    target = tl.load(Targets + row)
    picked = tl.load(base + target).to(tl.float32)
    tl.store(Loss + row, lse - picked)
    tl.store(Lse + row, lse)


@triton.jit
def cross_entropy_bwd(Logits, Targets, Lse, DLogits, Grad, rows, stride, V,
                      BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    scale = tl.load(Grad).to(tl.float32) / rows  # the mean's gradient, read on the device
    lse = tl.load(Lse + row)
    target = tl.load(Targets + row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < V
        x = tl.load(Logits + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        grad = (tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)) * scale
        tl.store(DLogits + row * stride + cols, grad.to(DLogits.dtype.element_ty), mask=mask)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        flat = logits.reshape(-1, logits.shape[-1]).contiguous()
        rows, vocab = flat.shape
        tgt = targets.reshape(-1).contiguous()
        loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(loss)
        block = min(triton.next_power_of_2(vocab), 4096)
        cross_entropy_fwd[(rows,)](flat, tgt, loss, lse, flat.stride(0), vocab, BLOCK=block,
                                   num_warps=row_warps(block))
        ctx.save_for_backward(flat, tgt, lse)
        ctx.shape, ctx.block = logits.shape, block
        return loss.mean()

    @staticmethod
    def backward(ctx, grad):
        flat, tgt, lse = ctx.saved_tensors
        rows, vocab = flat.shape
        dlogits = torch.empty_like(flat)
        cross_entropy_bwd[(rows,)](flat, tgt, lse, dlogits, grad.reshape(1).contiguous(), rows,
                                   flat.stride(0), vocab, BLOCK=ctx.block,
                                   num_warps=row_warps(ctx.block))
        return dlogits.view(ctx.shape), None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [..., vocab] against integer targets [...] (f32 result)."""
    return _CrossEntropy.apply(logits, targets)
