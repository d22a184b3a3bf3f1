"""Gradient sync packs parameter gradients into buckets: one collective per bucket."""

import socket

import pytest
import torch
import torch.distributed as dist

from parc.ops.comm import SYNC_BUCKET_BYTES
from parc.runtime.sync import pack


def test_small_gradients_share_a_bucket_and_keep_their_values(group, monkeypatch):
    calls = []
    real = dist.all_reduce

    def counting(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return real(tensor, *args, **kwargs)

    monkeypatch.setattr(dist, "all_reduce", counting)
    big = SYNC_BUCKET_BYTES // 4  # f32 elements filling a bucket alone
    params = [torch.nn.Parameter(torch.empty(*shape)) for shape in ((3, 5), (7,), (big,),
                                                                    (2, 2))]
    for p in params:
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in params]
    buckets = pack(params, 0, group)
    for bucket in buckets:
        bucket.launch()
    for bucket in buckets:
        bucket.finish()
    assert calls == [15 + 7, big, 4]
    for p, b in zip(params, before):
        torch.testing.assert_close(p.grad, b)  # one process: the sum is the gradient itself


def _sum_worker(rank: int, port: int, world: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        shapes = ((3, 5), (7,), (SYNC_BUCKET_BYTES // 4,), (2, 2))

        def grads(r):
            gen = torch.Generator().manual_seed(100 + r)
            return [torch.randn(*s, generator=gen) for s in shapes]

        params = [torch.nn.Parameter(torch.empty(*s)) for s in shapes]
        for p, g in zip(params, grads(rank)):
            p.grad = g.clone()
        params[3].grad = None if rank == 1 else params[3].grad  # a rank with no gradient
        buckets = pack(params, 0, dist.group.WORLD)
        for bucket in reversed(buckets):  # launched in any order, finished in order
            bucket.launch()
        for bucket in buckets:
            bucket.finish()
        every = [grads(r) for r in range(world)]
        for i, p in enumerate(params):
            want = sum(g[i] for r, g in enumerate(every) if not (i == 3 and r == 1))
            torch.testing.assert_close(p.grad, want)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_buckets_sum_each_gradient_over_the_ranks():
    """Three ranks, each with its own gradients (one rank has none for a parameter): after
    the buckets, every rank holds each parameter's sum over the ranks, unpacked in place."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_sum_worker, args=(port, 3), nprocs=3, join=True)


def test_every_mesh_makes_its_own_copy_groups(monkeypatch):
    """Programs run one after another in one process (the contract driver does): each mesh
    makes its parameter-copy groups afresh on every rank, whatever address the last one had.
    A cache keyed by the mesh's id() can find a freed mesh's group on one rank and not on
    another, and the ranks then disagree on the groups they make: a hang."""
    from types import SimpleNamespace

    from parc.runtime.mesh import Mesh
    from parc.runtime.sync import copy_group

    made = []
    monkeypatch.setattr(dist, "new_group", lambda members: made.append(members) or len(made))
    for _ in range(3):
        mesh = Mesh((("pp", 4),), {"pp": 0}, {"pp": None}, 0, torch.device("cpu"))
        program = SimpleNamespace(mesh=mesh)
        assert copy_group(program, (0, 3)) == len(made)
        assert copy_group(program, (0, 3)) == len(made)  # once per mesh
        del mesh, program
    assert made == [[0, 3]] * 3
