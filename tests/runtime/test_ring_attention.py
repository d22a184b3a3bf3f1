"""Ring attention on 2 and 4 ranks gives causal attention of the whole sequence: the output
and the gradients of q, k and v, in the load-balanced layout, against torch's SDPA."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from parc.runtime import zigzag
from parc.runtime.ring_attention import ring_attention


def _whole(seed: int, batch: int, heads: int, kv_heads: int, seq: int, dim: int):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, seq, dim, generator=gen)
    k = torch.randn(batch, kv_heads, seq, dim, generator=gen)
    v = torch.randn(batch, kv_heads, seq, dim, generator=gen)
    grad = torch.randn(batch, heads, seq, dim, generator=gen)
    return q, k, v, grad


def _check(group, num_ranks: int, rank: int, batch, heads, kv_heads, seq, dim) -> None:
    q, k, v, grad = _whole(seq, batch, heads, kv_heads, seq, dim)
    whole = [t.clone().requires_grad_() for t in (q, k, v)]
    want = F.scaled_dot_product_attention(*whole, is_causal=True,
                                          enable_gqa=heads != kv_heads)
    want.backward(grad)
    mine = [zigzag.take(t, 2, num_ranks, rank).requires_grad_() for t in (q, k, v)]
    out = ring_attention(*mine, group)
    out.backward(zigzag.take(grad, 2, num_ranks, rank))
    torch.testing.assert_close(out, zigzag.take(want, 2, num_ranks, rank))
    for got, ref in zip(mine, whole):
        torch.testing.assert_close(got.grad, zigzag.take(ref.grad, 2, num_ranks, rank))


def _worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=4)
    try:
        pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        # batch, heads, kv heads (GQA in the first), seq, head_dim
        for batch, heads, kv_heads, seq, dim in [(2, 4, 2, 16, 8), (1, 3, 3, 24, 5)]:
            _check(dist.group.WORLD, 4, rank, batch, heads, kv_heads, seq, dim)
            _check(pairs[rank // 2], 2, rank % 2, batch, heads, kv_heads, seq, dim)
    finally:
        dist.destroy_process_group()


def test_an_axis_of_one_device_is_causal_attention():
    """A size-1 axis has no group (None): the ring is this rank alone, not the world."""
    q, k, v, grad = _whole(0, 2, 4, 2, 8, 8)
    whole = [t.clone().requires_grad_() for t in (q, k, v)]
    want = F.scaled_dot_product_attention(*whole, is_causal=True, enable_gqa=True)
    want.backward(grad)
    mine = [t.clone().requires_grad_() for t in (q, k, v)]
    out = ring_attention(*mine, None)
    out.backward(grad)
    torch.testing.assert_close(out, want)
    for got, ref in zip(mine, whole):
        torch.testing.assert_close(got.grad, ref.grad)


@pytest.mark.slow
def test_ring_attention_matches_sdpa_on_two_and_four_ranks():
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port,), nprocs=4, join=True)


def test_the_layout_balances_causal_work_and_round_trips():
    seq, num_ranks = 16, 4
    x = torch.arange(seq)
    shares = [zigzag.take(x, 0, num_ranks, r) for r in range(num_ranks)]
    assert shares[0].tolist() == [0, 1, 14, 15]
    assert shares[3].tolist() == [6, 7, 8, 9]
    assert torch.equal(zigzag.join(shares, 0), x)
    for r in range(num_ranks):
        assert torch.equal(zigzag.positions(seq, num_ranks, r), shares[r])
    # the keys each rank's queries see (sum of positions + 1) are the same on every rank
    work = {int((s + 1).sum()) for s in shares}
    assert len(work) == 1
