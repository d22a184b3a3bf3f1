"""With the design's uniform costs the simulator reproduces each family's published figures."""

import itertools

import pytest

from parc.compiler.schedules import build
from parc.compiler.schedules.simulate import simulate, uniform_cost
from parc.compiler.schedules.skip import achieved_ratio
from parc.compiler.schedules.validate import runnable_order, validate
from parc.compiler.schedules.zero_bubble import handcrafted

GRID = [(p, m) for p, m in itertools.product([2, 3, 4, 8], [1, 2, 4, 8, 16]) if m >= 1]


def run(family, p, m, **kw):
    schedule = build(family, p, m, **kw)
    validate(schedule)
    return schedule, simulate(schedule, uniform_cost(schedule.split_backward))


@pytest.mark.parametrize("p, m", GRID)
def test_gpipe_and_1f1b_bubble(p, m):
    for family in ("gpipe", "1f1b"):
        _, sim = run(family, p, m)
        assert sim.step_time == 3 * (m + p - 1)
        assert sim.bubble_ratio == pytest.approx((p - 1) / (m + p - 1))


@pytest.mark.parametrize("p, m", GRID)
def test_memory_gpipe_holds_all_1f1b_at_most_p_minus_r(p, m):
    _, gpipe = run("gpipe", p, m)
    assert gpipe.peak_inflight == [m] * p
    _, one = run("1f1b", p, m)
    assert one.peak_inflight == [min(p - r, m) for r in range(p)]


@pytest.mark.parametrize("p, m, v", [(p, m, v) for p in (2, 4, 8) for m in (p, 2 * p, 4 * p)
                                     for v in (2, 3, 4)])
def test_interleaved_bubble(p, m, v):
    schedule, sim = run("interleaved", p, m, virtual=v)
    assert schedule.num_stages == p * v
    # (p-1)/(v m) of the ideal compute time, i.e. (p-1)/(v m + p - 1) of the step
    assert sim.bubble_ratio == pytest.approx((p - 1) / (v * m + p - 1))
    _, one = run("1f1b", p, m)
    assert sim.bubble_ratio < one.bubble_ratio


def test_interleaved_needs_microbatches_divisible_by_p():
    with pytest.raises(ValueError, match="divisible"):
        build("interleaved", 4, 6, virtual=2)


@pytest.mark.parametrize("p, m", [(p, m) for p in (2, 4, 8) for m in (p, 2 * p, 4 * p)])
def test_zb_h1_beats_1f1b_at_equal_peak_memory(p, m):
    """The handcrafted order, with sends that wait for nobody: the paper's figure."""
    zb_order = handcrafted(p, m)
    validate(zb_order)
    zb = simulate(zb_order, uniform_cost(True))
    _, one = run("1f1b", p, m)
    assert max(zb.peak_inflight) <= max(one.peak_inflight)
    assert zb.bubble_ratio < one.bubble_ratio
    ideal = 3 * m  # busy units per rank
    # the zero-bubble paper's figure: (p - 1) idle slots against 1F1B's 3 (p - 1)
    assert zb.step_time - ideal == p - 1 and one.step_time - ideal == 3 * (p - 1)


@pytest.mark.parametrize("p, m", [(4, 8), (8, 16), (8, 32)])
def test_zb_h1_as_posted_on_nccl_keeps_the_papers_figure(p, m):
    """Posted as the runtime posts it (a group of sends alone left in flight while the rank
    runs a W, groups completing in order), the handcrafted order keeps the paper's p - 1
    idle slots: a rank that sends a gradient goes on to its W while the rank before it is
    still busy. (Waiting for every group before the next action, as the runtime once did,
    cost 3 idle slots per rank at p = 4.) The builder's order is as fast."""
    cost = uniform_cost(True)
    posted = simulate(handcrafted(p, m), cost, order=runnable_order(handcrafted(p, m)))
    assert posted.step_time == simulate(handcrafted(p, m), cost).step_time == 3 * m + p - 1
    chosen = build("zb_h1", p, m)
    mine = simulate(chosen, cost, order=runnable_order(chosen))
    assert mine.step_time <= posted.step_time


@pytest.mark.parametrize("p, m, ratio", [(4, 8, 0.5), (8, 16, 0.25), (8, 16, 0.5), (5, 12, 0.34)])
def test_skip_paths(p, m, ratio):
    schedule, sim = run("skip", p, m, ratio=ratio, seed=3)
    for path in schedule.paths:
        assert path[0] == 0 and path[-1] == p - 1  # first and last never skipped
        assert list(path) == sorted(set(path))  # each stage at most once, in order
    assert abs(achieved_ratio(schedule) - ratio) <= 0.5 / ((p - 2) * m)
    visits = [sum(s in path for path in schedule.paths) for s in range(1, p - 1)]
    assert max(visits) - min(visits) <= 1  # load is balanced over the middle stages
    _, full = run("1f1b", p, m)
    assert sum(sim.busy) < sum(full.busy)  # skipped stages: less work in all


def test_skip_is_deterministic_by_seed_and_runs_forward_only():
    from parc.compiler.schedules.skip import skip

    assert build("skip", 6, 8, ratio=0.5, seed=1) == build("skip", 6, 8, ratio=0.5, seed=1)
    inference = skip(6, 8, 0.5, seed=1, forward_only=True)
    validate(inference)
    assert {a.op for rank in inference.ranks for a in rank} == {"F"}
