"""Torch functions the op catalog lowers to, beyond torch's own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import zigzag


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


def rope(x: torch.Tensor, theta: float = 10000.0,
         positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary position embedding over [..., seq, head_dim] (pairs of halves, as in LLaMA), at
    `positions` (default 0, 1, ...; a context-parallel share gives its global positions)."""
    seq, dim = x.shape[-2], x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    if positions is None:
        positions = torch.arange(seq, device=x.device)
    angles = torch.outer(positions.to(device=x.device, dtype=torch.float32), inv)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float()[..., : dim // 2], x.float()[..., dim // 2:]
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


# ---- dropout: masks that are a function of each element's place, not of an RNG's state

_AT = {"step": 0, "microbatch": 0, "training": True}


def at(step: int, microbatch: int, training: bool = True) -> None:
    """What the executor is running: dropout's masks follow (step, microbatch) alone, so a
    recomputed forward and the single-process reference draw the same ones."""
    _AT.update(step=step, microbatch=microbatch, training=training)


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 (products wrap; shifts made logical by masking)."""
    z = (z ^ ((z >> 30) & 0x3FFFFFFFF)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ ((z >> 27) & 0x1FFFFFFFFF)) * _signed(0x94D049BB133111EB)
    return z ^ ((z >> 31) & 0x1FFFFFFFF)


def dropout(x: torch.Tensor, p: float, key: int = 0, seed: int = 0, shape=None,
            splits=()) -> torch.Tensor:
    """Zero each element with probability p (in training), scale the rest by 1 / (1 - p).

    Whether an element is kept is a hash of (seed, the op's key, step, microbatch) and the
    element's index in the whole tensor `shape` (this rank's slice is where `splits`,
    (dim, process group[, load-balanced]) outer axis first, say): ranks that hold the same
    elements (a replicated tensor) draw the same mask, ranks with other elements
    (data-parallel rows, tensor-parallel columns) other masks, and the single-process
    program the same masks as the parallel one, element for element."""
    if p == 0.0 or not _AT["training"]:
        return x
    full = list(shape) if shape is not None else list(x.shape)
    # the places along each dim this rank holds: cut by each split, outer axis first; a
    # split marked as the context-parallel one takes its load-balanced two chunks
    places = [torch.arange(n, dtype=torch.int64, device=x.device) for n in full]
    for dim, group, *layout in splits:
        ways = 1 if group is None else torch.distributed.get_world_size(group)
        rank = 0 if group is None else torch.distributed.get_rank(group)
        places[dim] = zigzag.take(places[dim], 0, ways, rank) if layout and layout[0] else \
            places[dim].chunk(ways)[rank]
    index = torch.zeros((), dtype=torch.int64, device=x.device)
    stride = 1
    for dim in reversed(range(x.dim())):
        view = [1] * x.dim()
        view[dim] = x.shape[dim]
        index = index + (places[dim] * stride).view(view)
        stride *= full[dim]
    salt = _signed(((seed * 1_000_003 + key) * 1_000_033 + _AT["step"]) * 65_537
                   + _AT["microbatch"])
    z = _mix(index * _signed(0x9E3779B97F4A7C15) + salt)
    uniform = ((z >> 40) & 0xFFFFFF).to(torch.float32) / float(1 << 24)
    return x * (uniform >= p).to(x.dtype) / (1.0 - p)


# ---- targets a cross-entropy counts (ignore_index): how many, per microbatch

_COUNTED: dict[str, list[float]] = {}


def set_counted(counts: dict[str, list[float]]) -> None:
    _COUNTED.clear()
    _COUNTED.update(counts)


def counted(name: str) -> float:
    """How many targets of input `name` the current microbatch counts, over every rank that
    holds a share of them (at least one)."""
    return max(1.0, _COUNTED[name][_AT["microbatch"]])
