"""The load-balanced sequence layout of context parallelism (torchtitan's, after Megatron-CP).

The sequence is cut into 2 * cp equal chunks and rank i of the cp axis holds chunks i and
2 * cp - 1 - i, in that order. Under a causal mask each rank then does the same work: a rank
that holds an early chunk also holds a late one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


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


def order(x: torch.Tensor, dim: int, num_ranks: int) -> torch.Tensor:
    """A whole tensor with its chunks along `dim` in rank order of the shares (rank 0's two,
    then rank 1's, ...), so that contiguous collectives cut and place the shares."""
    return torch.cat([take(x, dim, num_ranks, r) for r in range(num_ranks)], dim=dim)


def unorder(x: torch.Tensor, dim: int, num_ranks: int) -> torch.Tensor:
    """The inverse of `order`: the whole tensor from the shares lying in rank order."""
    return join(list(x.chunk(num_ranks, dim=dim)), dim)


def _group(group) -> tuple[int, int]:
    if group is None:
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def take_in(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """B -> S(dim) on the context-parallel axis: this rank's share (its gradient is zero
    elsewhere, through autograd)."""
    size, rank = _group(group)
    return take(x, dim, size, rank)


def positions_in(seq: int, group, device=None) -> torch.Tensor:
    """The global positions of this rank's share of a sequence split over `group`."""
    size, rank = _group(group)
    return positions(seq, size, rank, device)
