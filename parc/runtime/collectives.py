"""Communication of the boxing pass, as autograd functions over one mesh axis's process group.

Each forward has the backward the SBP rules give it: all_reduce (P->B) passes gradients
through; grad_all_reduce is the identity forward and all-reduces the gradient; all_gather and
reduce_scatter are each other's backward. A group of None means the axis has one device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _size(group) -> int:
    return 1 if group is None else dist.get_world_size(group)


def _rank(group) -> int:
    return 0 if group is None else dist.get_rank(group)


def _sum(x: torch.Tensor, group) -> torch.Tensor:
    out = x.contiguous().clone()
    if group is not None:
        dist.all_reduce(out, group=group)
    return out


def _gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    if group is None:
        return x
    parts = [torch.empty_like(x) for _ in range(_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def _scatter_sum(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    if group is None:
        return x
    return _sum(x, group).chunk(_size(group), dim=dim)[_rank(group)].contiguous()


class _AllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return _sum(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _GradAllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _sum(grad, ctx.group), None


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, dim):
        ctx.group, ctx.dim = group, dim
        return _gather(x, group, dim)

    @staticmethod
    def backward(ctx, grad):
        return _scatter_sum(grad, ctx.group, ctx.dim), None, None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, dim):
        ctx.group, ctx.dim = group, dim
        return _scatter_sum(x, group, dim)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, ctx.group, ctx.dim), None, None


class _AllToAll(torch.autograd.Function):
    """S(src) -> S(dst): gather along src, keep this rank's slice along dst."""

    @staticmethod
    def forward(ctx, x, group, src, dst):
        ctx.group, ctx.src, ctx.dst = group, src, dst
        return _gather(x, group, src).chunk(_size(group), dim=dst)[_rank(group)].contiguous()

    @staticmethod
    def backward(ctx, grad):
        out = _gather(grad, ctx.group, ctx.dst).chunk(_size(ctx.group), dim=ctx.src)
        return out[_rank(ctx.group)].contiguous(), None, None, None


def all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    return _AllReduce.apply(x, group)


def grad_all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    return _GradAllReduce.apply(x, group)


def all_gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    return _AllGather.apply(x, group, dim)


def reduce_scatter(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    return _ReduceScatter.apply(x, group, dim)


def all_to_all(x: torch.Tensor, group, src: int, dst: int) -> torch.Tensor:
    return _AllToAll.apply(x, group, src, dst)


def slice(x: torch.Tensor, group, dim: int) -> torch.Tensor:  # noqa: A001 - the IR's name
    """B -> S(dim): this rank's slice (its gradient is partial: zeros elsewhere)."""
    return x.chunk(_size(group), dim=dim)[_rank(group)]


def zero_fill(x: torch.Tensor, group) -> torch.Tensor:
    """B -> P: rank 0 keeps the value, the others contribute zeros."""
    return x if _rank(group) == 0 else x * 0.0


def to_partial(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """S(dim) -> P: the local slice in place, zeros around it."""
    n, r = _size(group), _rank(group)
    pieces = [x if i == r else torch.zeros_like(x) for i in range(n)]
    return torch.cat(pieces, dim=dim)


def vocab_parallel_embedding(ids: torch.Tensor, table: torch.Tensor, group) -> torch.Tensor:
    """embedding with the table split by rows (S(0)): look up local rows, zeros elsewhere (P)."""
    rows = table.shape[0]
    start = _rank(group) * rows
    local = ids - start
    hit = (local >= 0) & (local < rows)
    out = torch.nn.functional.embedding(local.clamp(0, rows - 1), table)
    return out * hit.unsqueeze(-1).to(out.dtype)
