"""Gradient sync packs parameter gradients into buckets: one collective per bucket."""

import socket

import pytest
import torch
import torch.distributed as dist

from parc.ops.comm import SYNC_BUCKET_BYTES
from parc.runtime.sync import pack


@pytest.fixture
def group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


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
