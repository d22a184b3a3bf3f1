"""Torch functions the op catalog lowers to, beyond torch's own."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention over [..., heads, seq, head_dim]; k and v may have fewer heads (GQA).
    torch's fused kernel (flash attention where available): the seq x seq scores are never
    kept for the backward, which is what the cost model assumes."""
    groups = q.shape[-3] // k.shape[-3]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=groups > 1)


def causal_softmax(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of [..., seq, seq] scores, position j > i masked out."""
    seq_q, seq_k = x.shape[-2], x.shape[-1]
    mask = torch.ones(seq_q, seq_k, dtype=torch.bool, device=x.device).triu(1)
    return torch.softmax(x.masked_fill(mask, float("-inf")), dim=-1)


def rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding over [..., seq, head_dim] (pairs of halves, as in LLaMA)."""
    seq, dim = x.shape[-2], x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(seq, device=x.device, dtype=torch.float32), inv)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float()[..., : dim // 2], x.float()[..., dim // 2:]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)
