"""Parameters gathered where they are used (ZeRO as FSDP runs it): the whole weight is not held
per microbatch, the backward gathers it again, the next gather is prefetched, the gradient is
reduce-scattered once per step; and the memory a run measures is the plan's prediction."""

import importlib.util
import tempfile
from pathlib import Path

import pytest
import torch

from parc.runtime import collectives
from parc.runtime.gathered import Gathers, keep_handles
from parc.runtime.live_bytes import LiveBytes

ROOT = Path(__file__).resolve().parents[2]


class Two(torch.nn.Module):
    """Two linear layers whose weights are gathered over a group of one rank (the world)."""

    GATHERED = (("w1", (("dp", 0, False),), None), ("w2", (("dp", 1, False),), None))

    def __init__(self, groups: dict) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(256, 256))
        self.w2 = torch.nn.Parameter(torch.randn(256, 256))
        self.gathers = Gathers(self, self.GATHERED, groups) if groups else None

    def forward(self, x):
        if self.gathers is None:
            return torch.tanh(x @ self.w1) @ self.w2
        t1 = self.gathers.use(0)
        h = torch.tanh(x @ t1)
        del t1
        t2 = self.gathers.use(1)
        y = h @ t2
        del t2
        return y


def test_whole_weights_are_not_held_per_microbatch_and_gradients_match(group, monkeypatch):
    plain, sharded = Two({}), Two({"dp": group})
    xs = [torch.randn(4, 256) for _ in range(3)]
    for x in xs:
        plain(x).square().sum().backward()
    scattered = []
    real = collectives._scatter_into

    def counting(out, x, *args, **kwargs):
        scattered.append(x.shape)
        return real(out, x, *args, **kwargs)

    monkeypatch.setattr(collectives, "_scatter_into", counting)
    weight = 256 * 256 * 4
    with LiveBytes() as live:
        live.hold(sharded.parameters())
        before = live.now
        outs = []
        for x in xs:  # three microbatches in flight, as a pipeline keeps them
            with keep_handles(sharded):
                outs.append(sharded(x))
        held = live.now - before
        for y in outs:
            y.square().sum().backward()
        assert not scattered  # nothing reduced per microbatch
        sharded.gathers.finish()
    # three microbatches of activations (4 x 256 each, a few of them), no whole weight
    assert held < weight, held
    assert len(scattered) == 2  # once per parameter per step
    for a, b in ((plain.w1, sharded.w1), (plain.w2, sharded.w2)):
        torch.testing.assert_close(b.grad, a.grad)
    assert all(item.pending is None and item.accum is None for item in sharded.gathers.items)


def test_the_next_gather_is_in_flight_while_one_is_used(group):
    module = Two({"dp": group})
    items = module.gathers.items
    x = torch.randn(4, 256)
    with keep_handles(module):
        t1 = module.gathers.use(0)
        assert items[1].pending is not None  # the forward's next, prefetched
        assert torch.equal(t1, module.w1)
        h = torch.tanh(x @ t1)
        y = h @ module.gathers.use(1)
    assert items[1].pending is None
    unpacked = []

    def grad_of_h(grad):  # w2 was gathered again for this gradient, and w1 prefetched
        unpacked.append(items[0].pending is not None)
        return grad

    h.register_hook(grad_of_h)
    y.sum().backward()
    assert unpacked == [True]
    module.gathers.finish()
    assert items[0].pending is None


def _bench():
    path = ROOT / "bench" / "zero_memory.py"
    spec = importlib.util.spec_from_file_location("bench_zero_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_zero_memory_measured_is_predicted_and_below_replicated():
    """Two processes train a GPT under dp = 2, replicated and with its weights sharded; each
    rank's peak of live tensors is within 10% of the plan's prediction."""
    bench = _bench()
    model = dict(vocab=512, d=128, heads=4, layers=4, seq=64)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sbp in bench.PLANS.items():
            text = bench.spec_text(sbp, model, batch=16, microbatches=2)
            rows[name] = bench.measure(text, Path(tmp) / name, steps=2)
    # each block's eight weights (four projections, two MLP, two norms) and the final norm's
    assert rows["zero"]["gathered_weights"] == 8 * 4 + 1
    assert rows["replicated"]["gathered_weights"] == 0
    for name, row in rows.items():
        for measured in row["measured"]:
            assert measured == pytest.approx(row["predicted"], rel=0.1), (name, row)
    assert max(rows["zero"]["measured"]) < 0.9 * min(rows["replicated"]["measured"])
