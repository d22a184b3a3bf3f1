"""Causal attention, flash style: q [..., heads, seq, head_dim] against k and v
[..., kv_heads, seq, head_dim] (grouped-query when kv_heads < heads), scale 1/sqrt(head_dim).

Forward: one program per block of query rows of one head streams the keys up to its last row
with an online max and sum (FlashAttention-2), so the seq x seq scores never reach memory; it
keeps the per-row log-sum-exp for the backward. Backward: delta = rowsum(dO * O), then one
kernel for dK and dV (one program per block of keys of a kv head, over every query head of its
group, so the group's sum stays in registers) and one for dQ (one program per block of
queries). Scores are in the log2 domain (exp2 of scores times scale x log2(e)).

Dot operands: f16 and bf16 go to the tensor cores as they are (f32 accumulation) on a GPU;
f32 inputs, and every input off the GPU (the Triton interpreter computes bf16 dots wrong),
are f32 operands with IEEE precision. Every other value is f32; results are cast at the
store. Row offsets are i64 products: heads x seq x head_dim passes 2^31 at LLM sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256


@triton.jit
def _operand(x, dtype, NATIVE: tl.constexpr):
    """A dot operand: in the input dtype (tensor cores) or f32."""
    if NATIVE:
        y = x.to(dtype)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def attention_fwd(Q, K, V, Out, Lse, q_b, q_h, q_s, k_b, k_h, k_s, v_b, v_h, v_s, o_b, o_h, o_s,
                  H, GROUP, S, D, qk_scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr, NATIVE: tl.constexpr):
    """O and the log2-sum-exp of one block of query rows of one head. Programs run the
    heads' last query blocks (the longest) first."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(S, BLOCK_M)
    bh = pid // blocks
    start_m = (blocks - 1 - pid % blocks) * BLOCK_M
    b, h = bh // H, bh % H
    kv = h // GROUP
    rows = start_m + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    row_ok, col_ok = rows < S, cols < D
    dt = Q.dtype.element_ty
    q = tl.load(Q + b * q_b + h * q_h + rows[:, None] * q_s + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    q = _operand(q, dt, NATIVE)
    K += b * k_b + kv * k_h
    V += b * v_b + kv * v_h
    m = tl.full([BLOCK_M], -float("inf"), tl.float32)
    total = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, tl.minimum(start_m + BLOCK_M, S), BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        key_ok = keys < S
        kt = tl.load(K + keys[None, :] * k_s + cols[:, None],
                     mask=col_ok[:, None] & key_ok[None, :], other=0.0)
        s = tl.dot(q, _operand(kt, dt, NATIVE), input_precision="ieee") * qk_scale
        s = tl.where((keys[None, :] <= rows[:, None]) & key_ok[None, :], s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, 1))  # finite: key 0 is in every row's first block
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        total = total * alpha + tl.sum(p, 1)
        v = tl.load(V + keys[:, None] * v_s + cols[None, :],
                    mask=key_ok[:, None] & col_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(_operand(p, dt, NATIVE), _operand(v, dt, NATIVE),
                                            input_precision="ieee")
        m = m_new
    out = acc / total[:, None]
    tl.store(Out + b * o_b + h * o_h + rows[:, None] * o_s + cols[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
    tl.store(Lse + bh * S + rows, m + tl.log2(total), mask=row_ok)


@triton.jit
def attention_bwd_delta(Out, DO, Delta, o_b, o_h, o_s, do_b, do_h, do_s, H, S, D,
                        BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta = rowsum(dO * O) of one block of rows of one head (f32)."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(S, BLOCK_M)
    bh = pid // blocks
    b, h = bh // H, bh % H
    rows = (pid % blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < S)[:, None] & (cols < D)[None, :]
    o = tl.load(Out + b * o_b + h * o_h + rows[:, None] * o_s + cols[None, :], mask=mask,
                other=0.0).to(tl.float32)
    do = tl.load(DO + b * do_b + h * do_h + rows[:, None] * do_s + cols[None, :], mask=mask,
                 other=0.0).to(tl.float32)
    tl.store(Delta + bh * S + rows, tl.sum(o * do, 1), mask=rows < S)


@triton.jit
def attention_bwd_dkdv(Q, K, V, DO, Lse, Delta, DK, DV, q_b, q_h, q_s, k_b, k_h, k_s,
                       v_b, v_h, v_s, do_b, do_h, do_s, dk_b, dk_h, dk_s, dv_b, dv_h, dv_s,
                       KVH, GROUP, S, D, qk_scale, sm_scale, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, NATIVE: tl.constexpr):
    """dK and dV of one block of keys of one kv head: the queries at or after the block,
    of every query head in the kv head's group."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(S, BLOCK_N)
    bkv = pid // blocks
    start_n = (pid % blocks) * BLOCK_N
    b, kv = bkv // KVH, bkv % KVH
    keys = start_n + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    key_ok, col_ok = keys < S, cols < D
    tile = key_ok[:, None] & col_ok[None, :]
    dt = Q.dtype.element_ty
    k = tl.load(K + b * k_b + kv * k_h + keys[:, None] * k_s + cols[None, :], mask=tile,
                other=0.0)
    v = tl.load(V + b * v_b + kv * v_h + keys[:, None] * v_s + cols[None, :], mask=tile,
                other=0.0)
    k, v = _operand(k, dt, NATIVE), _operand(v, dt, NATIVE)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for g in range(0, GROUP):
        h = kv * GROUP + g
        bh = b * (KVH * GROUP) + h
        q_base = Q + b * q_b + h * q_h
        do_base = DO + b * do_b + h * do_h
        for start_m in range((start_n // BLOCK_M) * BLOCK_M, S, BLOCK_M):
            rows = start_m + tl.arange(0, BLOCK_M)
            row_ok = rows < S
            qt = tl.load(q_base + rows[None, :] * q_s + cols[:, None],
                         mask=col_ok[:, None] & row_ok[None, :], other=0.0)
            qt = _operand(qt, dt, NATIVE)
            lse = tl.load(Lse + bh * S + rows, mask=row_ok, other=0.0)
            st = tl.dot(k, qt, input_precision="ieee") * qk_scale
            pt = tl.exp2(st - lse[None, :])
            pt = tl.where((rows[None, :] >= keys[:, None]) & row_ok[None, :], pt, 0.0)
            do = tl.load(do_base + rows[:, None] * do_s + cols[None, :],
                         mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            do = _operand(do, dt, NATIVE)
            dv += tl.dot(_operand(pt, dt, NATIVE), do, input_precision="ieee")
            delta = tl.load(Delta + bh * S + rows, mask=row_ok, other=0.0)
            dpt = tl.dot(v, tl.trans(do), input_precision="ieee")
            dst = pt * (dpt - delta[None, :])
            dk += tl.dot(_operand(dst, dt, NATIVE), tl.trans(qt), input_precision="ieee")
    tl.store(DK + b * dk_b + kv * dk_h + keys[:, None] * dk_s + cols[None, :],
             (dk * sm_scale).to(DK.dtype.element_ty), mask=tile)
    tl.store(DV + b * dv_b + kv * dv_h + keys[:, None] * dv_s + cols[None, :],
             dv.to(DV.dtype.element_ty), mask=tile)


@triton.jit
def attention_bwd_dq(Q, K, V, DO, Lse, Delta, DQ, q_b, q_h, q_s, k_b, k_h, k_s, v_b, v_h, v_s,
                     do_b, do_h, do_s, dq_b, dq_h, dq_s, H, GROUP, S, D, qk_scale, sm_scale,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     NATIVE: tl.constexpr):
    """dQ of one block of query rows of one head: the keys up to its last row."""
    pid = tl.program_id(0).to(tl.int64)
    blocks = tl.cdiv(S, BLOCK_M)
    bh = pid // blocks
    start_m = (blocks - 1 - pid % blocks) * BLOCK_M
    b, h = bh // H, bh % H
    kv = h // GROUP
    rows = start_m + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    row_ok, col_ok = rows < S, cols < D
    tile = row_ok[:, None] & col_ok[None, :]
    dt = Q.dtype.element_ty
    q = tl.load(Q + b * q_b + h * q_h + rows[:, None] * q_s + cols[None, :], mask=tile,
                other=0.0)
    do = tl.load(DO + b * do_b + h * do_h + rows[:, None] * do_s + cols[None, :], mask=tile,
                 other=0.0)
    q, do = _operand(q, dt, NATIVE), _operand(do, dt, NATIVE)
    lse = tl.load(Lse + bh * S + rows, mask=row_ok, other=0.0)
    delta = tl.load(Delta + bh * S + rows, mask=row_ok, other=0.0)
    K += b * k_b + kv * k_h
    V += b * v_b + kv * v_h
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, tl.minimum(start_m + BLOCK_M, S), BLOCK_N):
        keys = start_n + tl.arange(0, BLOCK_N)
        key_ok = keys < S
        kt = tl.load(K + keys[None, :] * k_s + cols[:, None],
                     mask=col_ok[:, None] & key_ok[None, :], other=0.0)
        vt = tl.load(V + keys[None, :] * v_s + cols[:, None],
                     mask=col_ok[:, None] & key_ok[None, :], other=0.0)
        kt, vt = _operand(kt, dt, NATIVE), _operand(vt, dt, NATIVE)
        s = tl.dot(q, kt, input_precision="ieee") * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where((keys[None, :] <= rows[:, None]) & key_ok[None, :], p, 0.0)
        dp = tl.dot(do, vt, input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq += tl.dot(_operand(ds, dt, NATIVE), tl.trans(kt), input_precision="ieee")
    tl.store(DQ + b * dq_b + h * dq_h + rows[:, None] * dq_s + cols[None, :],
             (dq * sm_scale).to(DQ.dtype.element_ty), mask=tile)


@dataclass(frozen=True)
class Launch:
    """Block sizes and launch options of one kernel."""
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class Config:
    fwd: Launch
    dkdv: Launch
    dq: Launch
    block_d: int
    native: bool  # dot operands in the input dtype (tensor cores), else f32


def config(head_dim: int, dtype: torch.dtype, on_gpu: bool) -> Config:
    """Launch settings: FlashAttention-2's usual tiles on a GPU (wider heads, more warps);
    blocks of 16 off it, so tests at small sizes cross block boundaries and masked tails."""
    block_d = max(16, triton.next_power_of_2(head_dim))  # a dot needs 16 on every side
    if not on_gpu:
        small = Launch(16, 16, 1, 1)
        return Config(small, small, small, block_d, False)
    native = dtype != torch.float32
    warps = 4 if block_d <= 64 else 8
    if native:
        return Config(Launch(128, 64, warps, 3), Launch(32, 128, warps, 3),
                      Launch(128, 32, warps, 3), block_d, True)
    # f32 operands take twice the shared memory and registers
    return Config(Launch(64, 32, warps, 2), Launch(32, 64, warps, 2), Launch(64, 32, warps, 2),
                  block_d, False)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """[batch, heads, seq, head_dim] with unit stride along head_dim (any other layout)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _strides(*tensors: torch.Tensor) -> list[int]:
    return [s for t in tensors for s in t.stride()[:3]]


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        batch, heads, seq, dim = q.shape
        kv_heads = k.shape[1]
        cfg = config(dim, q.dtype, q.is_cuda)
        sm_scale = 1.0 / math.sqrt(dim)
        # [batch, seq, heads, head_dim] in memory: merging the heads after is a view
        o = torch.empty(batch, seq, heads, dim, dtype=q.dtype, device=q.device).transpose(1, 2)
        lse = torch.empty(batch * heads, seq, dtype=torch.float32, device=q.device)
        f = cfg.fwd
        attention_fwd[(batch * heads * triton.cdiv(seq, f.block_m),)](
            q, k, v, o, lse, *_strides(q, k, v, o), heads, heads // kv_heads, seq, dim,
            sm_scale * LOG2E, BLOCK_M=f.block_m, BLOCK_N=f.block_n, BLOCK_D=cfg.block_d,
            NATIVE=cfg.native, num_warps=f.num_warps, num_stages=f.num_stages)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.cfg = cfg
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        cfg = ctx.cfg
        do = _unit_rows(do)
        batch, heads, seq, dim = q.shape
        kv_heads = k.shape[1]
        group = heads // kv_heads
        sm_scale = 1.0 / math.sqrt(dim)
        delta = torch.empty_like(lse)
        f = cfg.dq
        attention_bwd_delta[(batch * heads * triton.cdiv(seq, f.block_m),)](
            o, do, delta, *_strides(o, do), heads, seq, dim, BLOCK_M=f.block_m,
            BLOCK_D=cfg.block_d)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        f = cfg.dkdv
        attention_bwd_dkdv[(batch * kv_heads * triton.cdiv(seq, f.block_n),)](
            q, k, v, do, lse, delta, dk, dv, *_strides(q, k, v, do, dk, dv), kv_heads, group,
            seq, dim, sm_scale * LOG2E, sm_scale, BLOCK_M=f.block_m, BLOCK_N=f.block_n,
            BLOCK_D=cfg.block_d, NATIVE=cfg.native, num_warps=f.num_warps,
            num_stages=f.num_stages)
        f = cfg.dq
        attention_bwd_dq[(batch * heads * triton.cdiv(seq, f.block_m),)](
            q, k, v, do, lse, delta, dq, *_strides(q, k, v, do, dq), heads, group, seq, dim,
            sm_scale * LOG2E, sm_scale, BLOCK_M=f.block_m, BLOCK_N=f.block_n,
            BLOCK_D=cfg.block_d, NATIVE=cfg.native, num_warps=f.num_warps,
            num_stages=f.num_stages)
        return dq, dk, dv


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax(q k^T / sqrt(head_dim)) v over [..., heads, seq, head_dim]; k and v
    have kv_heads dividing heads (query head h reads kv head h // (heads / kv_heads))."""
    if q.dim() < 3 or k.shape != v.shape or q.shape[:-3] != k.shape[:-3] \
            or q.shape[-2:] != k.shape[-2:]:
        raise ValueError(f"causal_attention: q {tuple(q.shape)}, k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)} are not [..., heads, seq, head_dim] alike")
    if q.shape[-3] % k.shape[-3] != 0:
        raise ValueError(f"causal_attention: {q.shape[-3]} query heads do not group over "
                         f"{k.shape[-3]} key/value heads")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"causal_attention: head_dim {q.shape[-1]} is over {MAX_HEAD_DIM}")
    if q.dim() == 4:
        return _CausalAttention.apply(_unit_rows(q), _unit_rows(k), _unit_rows(v))
    q4, k4, v4 = (_unit_rows(t.reshape(-1, *t.shape[-3:])) for t in (q, k, v))
    return _CausalAttention.apply(q4, k4, v4).reshape(q.shape)
