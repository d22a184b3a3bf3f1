"""Ring attention over the cp axis (Liu et al.'s ring attention with the causal load balance of
torchtitan's context parallelism).

Every rank holds its two chunks of the sequence (`zigzag`) of q, k and v, laid out
[batch, heads, seq / cp, head_dim]; k and v may have fewer heads (GQA). The forward passes
the K/V blocks once around the ring (cp - 1 transfers, each posted before the block in
hand is computed and waited for after it), computes each pair of a query chunk
and a key chunk that causality leaves visible (a diagonal pair under the causal mask, pairs
above the diagonal skipped) with its log-sum-exp, and merges them with the online softmax.
The backward recomputes each block from the saved log-sum-exp and passes K/V with their
gradient accumulators around the ring again (cp - 1 transfers of both, then one of the
gradients home). Each transfer is one `batch_isend_irecv` group posted in the same order on
every rank (send to the next rank, receive from the one before), so it runs under NCCL's
rule that between two ranks operations complete in posted order.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from .zigzag import chunk_ids

TAG = 0


class _Shift:
    """`tensor` on its way to the next rank of the ring, the previous rank's on its way here;
    `wait()` gives the one received."""

    def __init__(self, tensor: torch.Tensor, group):
        size, rank = dist.get_world_size(group), dist.get_rank(group)
        self.sent = tensor.contiguous()
        self.out = torch.empty_like(self.sent)
        nxt = dist.get_global_rank(group, (rank + 1) % size)
        prev = dist.get_global_rank(group, (rank - 1) % size)
        self.works = dist.batch_isend_irecv([
            dist.P2POp(dist.isend, self.sent, nxt, group=group, tag=TAG),
            dist.P2POp(dist.irecv, self.out, prev, group=group, tag=TAG)])

    def wait(self) -> torch.Tensor:
        for work in self.works:
            work.wait()
        return self.out


def _shift(tensor: torch.Tensor, group) -> torch.Tensor:
    """Send `tensor` to the next rank of the ring and receive the previous rank's."""
    return _Shift(tensor, group).wait()


def _ring(group) -> tuple[int, int]:
    """Size of the ring and this rank's place in it; a group of None is an axis of one."""
    if group is None:
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _visible(q_chunk: int, k_chunk: int) -> str | None:
    """How a query chunk sees a key chunk under the causal mask: all of it, its lower
    triangle (the same chunk), or nothing."""
    if k_chunk < q_chunk:
        return "full"
    return "causal" if k_chunk == q_chunk else None


def _scores(q: torch.Tensor, k: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if kind == "causal":
        n = s.shape[-1]
        mask = torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return s


def _expand(kv: torch.Tensor, groups: int) -> torch.Tensor:
    return kv if groups == 1 else kv.repeat_interleave(groups, dim=1)


def _fold(grad: torch.Tensor, groups: int) -> torch.Tensor:
    """The gradient of `_expand`: sum over the query heads of each kv head."""
    if groups == 1:
        return grad
    b, h, s, d = grad.shape
    return grad.view(b, h // groups, groups, s, d).sum(dim=2)


class RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, group):
        size, rank = _ring(group)
        groups = q.shape[1] // k.shape[1]
        scale = 1.0 / math.sqrt(q.shape[-1])
        with torch.autocast(q.device.type, enabled=False):
            qf = q.float().chunk(2, dim=2)
            out = [torch.zeros_like(part) for part in qf]
            lse = [torch.full(part.shape[:-1], float("-inf"), device=q.device) for part in qf]
            kv = torch.stack([k, v]).contiguous()
            mine = chunk_ids(size, rank)
            for step in range(size):
                source = (rank - step) % size
                # the next block travels while this one is computed
                nxt = _Shift(kv, group) if step < size - 1 else None
                ks, vs = (_expand(t.float(), groups).chunk(2, dim=2) for t in kv)
                for a, qa in enumerate(mine):
                    for b, kb in enumerate(chunk_ids(size, source)):
                        kind = _visible(qa, kb)
                        if kind is None:
                            continue
                        s = _scores(qf[a], ks[b], kind, scale)
                        block_lse = torch.logsumexp(s, dim=-1)
                        block_out = torch.matmul(torch.exp(s - block_lse[..., None]), vs[b])
                        new = torch.logaddexp(lse[a], block_lse)
                        out[a] = (out[a] * torch.exp(lse[a] - new)[..., None]
                                  + block_out * torch.exp(block_lse - new)[..., None])
                        lse[a] = new
                if nxt is not None:
                    kv = nxt.wait()
            out_all = torch.cat(out, dim=2)
            lse_all = torch.cat(lse, dim=2)
        ctx.save_for_backward(q, k, v, out_all, lse_all)
        ctx.group, ctx.groups, ctx.scale = group, groups, scale
        return out_all.to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        group, groups, scale = ctx.group, ctx.groups, ctx.scale
        size, rank = _ring(group)
        with torch.autocast(q.device.type, enabled=False):
            do = grad_out.float()
            delta = (do * out).sum(dim=-1).chunk(2, dim=2)
            dos, lses = do.chunk(2, dim=2), lse.chunk(2, dim=2)
            qf = q.float().chunk(2, dim=2)
            dq = [torch.zeros_like(part) for part in qf]
            kv = torch.stack([k, v]).contiguous()
            dkv = torch.zeros(kv.shape, dtype=torch.float32, device=q.device)
            mine = chunk_ids(size, rank)
            for step in range(size):
                source = (rank - step) % size
                ks, vs = (_expand(t.float(), groups).chunk(2, dim=2) for t in kv)
                dk = [torch.zeros_like(t) for t in ks]
                dv = [torch.zeros_like(t) for t in vs]
                for a, qa in enumerate(mine):
                    for b, kb in enumerate(chunk_ids(size, source)):
                        kind = _visible(qa, kb)
                        if kind is None:
                            continue
                        p = torch.exp(_scores(qf[a], ks[b], kind, scale) - lses[a][..., None])
                        dv[b] = dv[b] + torch.matmul(p.transpose(-1, -2), dos[a])
                        dp = torch.matmul(dos[a], vs[b].transpose(-1, -2))
                        ds = p * (dp - delta[a][..., None]) * scale
                        dq[a] = dq[a] + torch.matmul(ds, ks[b])
                        dk[b] = dk[b] + torch.matmul(ds.transpose(-1, -2), qf[a])
                dkv = dkv + torch.stack([_fold(torch.cat(dk, dim=2), groups),
                                         _fold(torch.cat(dv, dim=2), groups)])
                if step < size - 1:
                    # K/V and the gradients gathered for them so far travel on together
                    both = _shift(torch.cat([kv.float(), dkv]), group)
                    kv, dkv = both[:2].to(k.dtype), both[2:]
            if size > 1:
                dkv = _shift(dkv, group)  # the gradients of this rank's own K/V come home
        return (torch.cat(dq, dim=2).to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None)


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group) -> torch.Tensor:
    """Causal attention of the rank's load-balanced share of the sequence over the ring `group`."""
    return RingAttention.apply(q, k, v, group)
