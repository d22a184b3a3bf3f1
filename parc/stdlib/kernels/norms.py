"""Layer norm and RMS norm over the last dimension: one program per row forward; backward,
one program per block of rows, which sums the weight gradients of its rows in registers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .launch import partials, row_warps


@triton.jit
def layer_norm_fwd(X, W, B, Y, Mean, Rstd, stride, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    xc = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride + cols, (xc * rstd * w + b).to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def layer_norm_bwd(X, W, DY, DX, DW, DB, Mean, Rstd, stride, N, rows, per_program,
                   BLOCK: tl.constexpr):
    """dX for a block of `per_program` rows; one partial row each of dW and dB, their sums
    over the block (the caller sums the partials)."""
    part = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    db = tl.zeros([BLOCK], dtype=tl.float32)
    start = part * per_program
    for row in range(start, tl.minimum(start + per_program, rows)):
        x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + row)
        rstd = tl.load(Rstd + row)
        xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        g = dy * w
        dx = rstd * (g - tl.sum(g, axis=0) / N - xhat * tl.sum(g * xhat, axis=0) / N)
        tl.store(DX + row * stride + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * xhat
        db += dy
    tl.store(DW + part * N + cols, dw, mask=mask)
    tl.store(DB + part * N + cols, db, mask=mask)


@triton.jit
def rms_norm_fwd(X, W, Y, Rstd, stride, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(Rstd + row, rstd)


@triton.jit
def rms_norm_bwd(X, W, DY, DX, DW, Rstd, stride, N, rows, per_program, BLOCK: tl.constexpr):
    """dX for a block of `per_program` rows; one partial row of dW, its sum over the block."""
    part = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    start = part * per_program
    for row in range(start, tl.minimum(start + per_program, rows)):
        x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + row)
        g = dy * w
        dx = rstd * g - x * (rstd * rstd * rstd) * tl.sum(g * x, axis=0) / N
        tl.store(DX + row * stride + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x * rstd
    tl.store(DW + part * N + cols, dw, mask=mask)


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return flat, flat.shape[0], flat.shape[1]


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, eps):
        flat, rows, n = _rows(x)
        y = torch.empty_like(flat)
        mean = torch.empty(rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        block = triton.next_power_of_2(n)
        layer_norm_fwd[(rows,)](flat, w, b, y, mean, rstd, flat.stride(0), n, eps, BLOCK=block,
                                num_warps=row_warps(block))
        ctx.save_for_backward(flat, w, mean, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        flat, w, mean, rstd = ctx.saved_tensors
        rows, n = flat.shape
        dy = dy.reshape(rows, n).contiguous()
        dx = torch.empty_like(flat)
        programs, per_program = partials(rows, flat.device)
        dw = torch.empty(programs, n, dtype=torch.float32, device=flat.device)
        db = torch.empty_like(dw)
        block = triton.next_power_of_2(n)
        layer_norm_bwd[(programs,)](flat, w, dy, dx, dw, db, mean, rstd, flat.stride(0), n,
                                    rows, per_program, BLOCK=block, num_warps=row_warps(block))
        return dx.view(ctx.shape), dw.sum(0).to(w.dtype), db.sum(0).to(w.dtype), None


class _RmsNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, eps):
        flat, rows, n = _rows(x)
        y = torch.empty_like(flat)
        rstd = torch.empty(rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(n)
        rms_norm_fwd[(rows,)](flat, w, y, rstd, flat.stride(0), n, eps, BLOCK=block,
                              num_warps=row_warps(block))
        ctx.save_for_backward(flat, w, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        flat, w, rstd = ctx.saved_tensors
        rows, n = flat.shape
        dy = dy.reshape(rows, n).contiguous()
        dx = torch.empty_like(flat)
        programs, per_program = partials(rows, flat.device)
        dw = torch.empty(programs, n, dtype=torch.float32, device=flat.device)
        block = triton.next_power_of_2(n)
        rms_norm_bwd[(programs,)](flat, w, dy, dx, dw, rstd, flat.stride(0), n, rows,
                                  per_program, BLOCK=block, num_warps=row_warps(block))
        return dx.view(ctx.shape), dw.sum(0).to(w.dtype), None


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
               eps: float = 1e-5) -> torch.Tensor:
    return _LayerNorm.apply(x, w, b, eps)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return _RmsNorm.apply(x, w, eps)
