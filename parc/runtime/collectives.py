"""Communication of the boxing pass, as autograd functions over one mesh axis's process group.

Each forward has the backward the SBP rules give it: all_reduce (P->B) passes gradients
through; grad_all_reduce is the identity forward and all-reduces the gradient; all_gather and
reduce_scatter are each other's backward; all_to_all is its own. Each is one collective of
its kind (all-gather, reduce-scatter, all-to-all), as the cost model charges them. A group of
None means the axis has one device.
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


def _gather_into(out: torch.Tensor, x: torch.Tensor, group, async_op: bool = False):
    """One all-gather into `out` (torch's newer name where it has one; looked up at each call,
    so a wrapper installed on torch.distributed sees it)."""
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(out, x, group=group, async_op=async_op)


def _scatter_into(out: torch.Tensor, x: torch.Tensor, group, async_op: bool = False):
    """One reduce-scatter (sum) into `out`."""
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return fn(out, x, group=group, async_op=async_op)


def _gather(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """Every rank's x, concatenated along `dim` in rank order (one all-gather)."""
    if group is None:
        return x
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((_size(group) * moved.shape[0],) + tuple(moved.shape[1:]))
    _gather_into(out, moved, group)
    return out.movedim(0, dim).contiguous() if dim else out


def _scatter_sum(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """The sum over ranks, this rank's slice along `dim` (one reduce-scatter)."""
    if group is None:
        return x
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] // _size(group),) + tuple(moved.shape[1:]))
    _scatter_into(out, moved, group)
    return out.movedim(0, dim).contiguous() if dim else out


def _exchange(x: torch.Tensor, group, src: int, dst: int) -> torch.Tensor:
    """S(src) -> S(dst): rank j gets this rank's piece of its slice along dst; the pieces
    arrive in rank order along src (one all-to-all)."""
    if group is None:
        return x
    n = _size(group)
    send = torch.stack(x.chunk(n, dim=dst)).contiguous()
    got = torch.empty_like(send)
    dist.all_to_all_single(got, send, group=group)
    return torch.cat(got.unbind(0), dim=src)


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
    """S -> B. The result's gradient is partial (its users split the work): the backward sums
    and scatters it. With `whole_grad` every rank holds the whole gradient already, and keeps
    its slice."""

    @staticmethod
    def forward(ctx, x, group, dim, whole_grad):
        ctx.group, ctx.dim, ctx.whole_grad = group, dim, whole_grad
        return _gather(x, group, dim)

    @staticmethod
    def backward(ctx, grad):
        if ctx.whole_grad:
            part = grad.chunk(_size(ctx.group), dim=ctx.dim)[_rank(ctx.group)].contiguous()
            return part, None, None, None
        return _scatter_sum(grad, ctx.group, ctx.dim), None, None, None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, dim):
        ctx.group, ctx.dim = group, dim
        return _scatter_sum(x, group, dim)

    @staticmethod
    def backward(ctx, grad):
        return _gather(grad, ctx.group, ctx.dim), None, None


class _AllToAll(torch.autograd.Function):
    """S(src) -> S(dst); the backward is the same exchange the other way."""

    @staticmethod
    def forward(ctx, x, group, src, dst):
        ctx.group, ctx.src, ctx.dst = group, src, dst
        return _exchange(x, group, src, dst)

    @staticmethod
    def backward(ctx, grad):
        return _exchange(grad.contiguous(), ctx.group, ctx.dst, ctx.src), None, None, None


def all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    return _AllReduce.apply(x, group)


def grad_all_reduce(x: torch.Tensor, group) -> torch.Tensor:
    return _GradAllReduce.apply(x, group)


def all_gather(x: torch.Tensor, group, dim: int, whole_grad: bool = False) -> torch.Tensor:
    return _AllGather.apply(x, group, dim, whole_grad)


def reduce_scatter(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    return _ReduceScatter.apply(x, group, dim)


def all_to_all(x: torch.Tensor, group, src: int, dst: int) -> torch.Tensor:
    return _AllToAll.apply(x, group, src, dst)


def slice(x: torch.Tensor, group, dim: int) -> torch.Tensor:  # noqa: A001 - the IR's name
    """B -> S(dim): this rank's slice (its gradient is partial: zeros elsewhere)."""
    return x.chunk(_size(group), dim=dim)[_rank(group)]


class _ZeroFill(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, keep):
        ctx.keep = keep
        return x.view_as(x) if keep else torch.zeros_like(x)

    @staticmethod
    def backward(ctx, grad):
        return (grad if ctx.keep else torch.zeros_like(grad)), None


def zero_fill(x: torch.Tensor, group) -> torch.Tensor:
    """B -> P: rank 0 keeps the value, the others contribute zeros (not x * 0, which keeps
    NaN and inf)."""
    return _ZeroFill.apply(x, _rank(group) == 0)


def to_partial(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    """S(dim) -> P: the local slice in place, zeros around it."""
    n, r = _size(group), _rank(group)
    pieces = [x if i == r else torch.zeros_like(x) for i in range(n)]
    return torch.cat(pieces, dim=dim)


def _shard_start(local: int, groups: list) -> int:
    """Where this rank's slice of a dim split over `groups` (outermost first) begins."""
    start, width = 0, local
    for group in groups:
        width *= _size(group)
    for group in groups:
        width //= _size(group)
        start += _rank(group) * width
    return start


def vocab_parallel_embedding(ids: torch.Tensor, table: torch.Tensor, groups: list) -> torch.Tensor:
    """embedding with the table split by rows (S(0)): look up local rows, zeros elsewhere (P)."""
    rows = table.shape[0]
    local = ids - _shard_start(rows, groups)
    hit = (local >= 0) & (local < rows)
    out = torch.nn.functional.embedding(local.clamp(0, rows - 1), table)
    return out * hit.unsqueeze(-1).to(out.dtype)


def _all_reduce_over(x: torch.Tensor, groups: list, op=dist.ReduceOp.SUM) -> torch.Tensor:
    for group in groups:
        if group is not None:
            dist.all_reduce(x, op=op, group=group)
    return x


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits whose vocabulary is split over `groups`: each rank reduces
    its slice to a row max, a sum of exponentials and the target's logit where it holds the
    target; three all-reduces of one number per row make every rank's loss the whole one. The
    gradient (softmax minus one-hot) needs no communication."""

    @staticmethod
    def forward(ctx, logits, targets, groups, ignore_index, count):
        x = logits.float().flatten(0, -2)
        t = targets.flatten()
        rows, width = x.shape
        top = _all_reduce_over(x.max(dim=-1).values, groups, dist.ReduceOp.MAX)
        exp = torch.exp(x - top.unsqueeze(-1))
        total = _all_reduce_over(exp.sum(dim=-1), groups)
        local = t - _shard_start(width, groups)
        hit = (local >= 0) & (local < width)
        picked = x.gather(1, local.clamp(0, width - 1).unsqueeze(-1)).squeeze(-1)
        target = _all_reduce_over(torch.where(hit, picked, 0.0), groups)
        losses = torch.log(total) + top - target
        # with ignore_index: the counted rows' sum over `count` of them (all ranks' rows)
        keep = (t != ignore_index).to(losses.dtype) if ignore_index >= 0 else None
        scale = 1.0 / (count if keep is not None else rows)
        ctx.save_for_backward(exp / total.unsqueeze(-1), local, hit,
                              keep if keep is not None else torch.ones_like(losses))
        ctx.shape, ctx.dtype, ctx.scale = logits.shape, logits.dtype, scale
        return (losses * keep).sum() * scale if keep is not None else losses.mean()

    @staticmethod
    def backward(ctx, grad):
        probs, local, hit, keep = ctx.saved_tensors
        rows, width = probs.shape
        onehot = torch.zeros_like(probs)
        onehot.scatter_(1, local.clamp(0, width - 1).unsqueeze(-1),
                        hit.to(probs.dtype).unsqueeze(-1))
        dx = (probs - onehot) * (keep.unsqueeze(-1) * (grad * ctx.scale))
        return dx.view(ctx.shape).to(ctx.dtype), None, None, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, groups: list,
                                 ignore_index: int = -1, count: float = 1.0) -> torch.Tensor:
    """cross_entropy with logits S(-1) over `groups`: the whole mean loss on every rank (B);
    with ignore_index, the sum over the other targets over `count` of them."""
    return _VocabParallelCrossEntropy.apply(logits, targets, groups, ignore_index, count)
