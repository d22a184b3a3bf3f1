"""The load-balanced sequence layout of context parallelism (torchtitan's, after Megatron-CP).

The sequence is cut into 2 * cp equal chunks and rank i of the cp axis holds chunks i and
2 * cp - 1 - i, in that order. Under a causal mask each rank then does the same work: a rank
that holds an early chunk also holds a late one.
"""

from __future__ import annotations

import torch


def chunk_ids(num_ranks: int, rank: int) -> tuple[int, int]:
    """The two global chunks (of 2 * num_ranks) that `rank` holds, in local order."""
    assert 0 <= rank < num_ranks
    return rank, 2 * num_ranks - 1 - rank


def positions(seq: int, num_ranks: int, rank: int, device=None) -> torch.Tensor:
    """The global positions of the rank's local tokens (i64 [seq / num_ranks])."""
    assert seq % (2 * num_ranks) == 0, (seq, num_ranks)
    chunk = seq // (2 * num_ranks)
    first, second = chunk_ids(num_ranks, rank)
    return torch.cat([torch.arange(first * chunk, (first + 1) * chunk, device=device),
                      torch.arange(second * chunk, (second + 1) * chunk, device=device)])


def take(x: torch.Tensor, dim: int, num_ranks: int, rank: int) -> torch.Tensor:
    """The rank's share of a whole tensor along `dim` (its two chunks, concatenated)."""
    chunks = x.chunk(2 * num_ranks, dim=dim)
    assert len(chunks) == 2 * num_ranks and x.shape[dim] % (2 * num_ranks) == 0
    first, second = chunk_ids(num_ranks, rank)
    return torch.cat([chunks[first], chunks[second]], dim=dim)


def join(shares: list[torch.Tensor], dim: int) -> torch.Tensor:
    """The whole tensor from every rank's share (in rank order), the inverse of `take`."""
    num_ranks = len(shares)
    chunks: list[torch.Tensor | None] = [None] * (2 * num_ranks)
    for rank, share in enumerate(shares):
        first, second = chunk_ids(num_ranks, rank)
        chunks[first], chunks[second] = share.chunk(2, dim=dim)
    return torch.cat(chunks, dim=dim)  # type: ignore[arg-type]
