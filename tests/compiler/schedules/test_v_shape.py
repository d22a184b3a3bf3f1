"""ZB-V and V-Half against the paper's claims (Qi et al. 2024), uniform costs: a chunk of a
V family is half a rank's layers, so half the time and half the activations of a stage of
the one-chunk families. Measured figures (bubble, peak microbatches of a rank's layers):
p=4 m=8: 1f1b 0.273 / 4, zb_h1 0.111 / 4, zb_v 0.059 / 4, v_half 0.158 / 3;
p=8 m=32: 1f1b 0.180 / 8, zb_h1 0.068 / 8, zb_v 0.054 / 8, v_half 0.107 / 5."""

import pytest

from parc.compiler.schedules import build
from parc.compiler.schedules.simulate import simulate
from parc.compiler.schedules.validate import validate


def figures(family: str, p: int, m: int) -> tuple[float, float]:
    schedule = build(family, p, m)
    validate(schedule)
    chunk = 2 if family in ("zb_v", "v_half") else 1
    sim = simulate(schedule, lambda a: 1.0 / chunk, activation_bytes=lambda s: 1.0 / chunk)
    return sim.bubble_ratio, max(sim.peak_activation_bytes)


@pytest.mark.parametrize("p, m", [(4, 8), (8, 32)])
def test_v_families_trade_bubble_and_memory_as_published(p, m):
    f1b, h1, zbv, half = (figures(f, p, m) for f in ("1f1b", "zb_h1", "zb_v", "v_half"))
    assert zbv[1] == f1b[1] == p  # ZB-V: 1F1B's activation memory
    assert zbv[0] < h1[0] < f1b[0] and zbv[0] < 0.06  # and the least bubble
    assert half[1] == p // 2 + 1  # V-Half: about half of it
    assert zbv[0] < half[0] < f1b[0]
