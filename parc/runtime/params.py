"""Parameters: the same full tensor on every rank and in the reference, then this rank's shard."""

from __future__ import annotations

import zlib

import torch


def init_full(name: str, shape: tuple[int, ...], init: tuple[str, tuple[float, ...]],
              seed: int) -> torch.Tensor:
    """A parameter's initial value, from the spec's seed and the parameter's name alone."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    kind, args = init
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "ones":
        return torch.ones(shape)
    if kind == "uniform":
        return (torch.rand(shape, generator=gen) * 2 - 1) * args[0]
    return torch.randn(shape, generator=gen) * args[0]


def shard(full: torch.Tensor, splits: list[tuple[int, int, int]]) -> torch.Tensor:
    """Cut `full` by (dim, ways, index) for every mesh axis that splits it."""
    out = full
    for dim, ways, index in splits:
        out = out.chunk(ways, dim=dim)[index]
    return out.contiguous()
