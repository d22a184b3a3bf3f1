"""The vocabulary passes (E, O, G per microbatch) in 1F1B and GPipe posting orders: every
rank joins each once, in one global order, where the anchor ranks' dependencies hold, and
the validator proves the order under NCCL's rules (and refuses broken ones)."""

import pytest

from parc.compiler.schedules import validated
from parc.compiler.schedules.posting import Step
from parc.compiler.schedules.schedule import Action
from parc.compiler.schedules.simulate import simulate
from parc.compiler.schedules.validate import ScheduleError, check_posting, runnable_order
from parc.compiler.schedules.vocab import VOCAB_STAGE, runnable_vocab_order

COSTS = {"F": 1.0, "B": 2.0, "E": 0.1, "O": 0.5, "G": 0.1}


def cost(action):
    return COSTS[action.op]


def _orders(family, p, m):
    schedule = validated(family, p, m, 1)
    base = runnable_order(schedule)
    events = simulate(schedule, cost, order=base).events
    return schedule, base, [runnable_vocab_order(schedule, base, events, check_posting, ends,
                                                 early)
                            for ends in (False, True) for early in (False, True)]


@pytest.mark.parametrize("family", ["1f1b", "gpipe"])
@pytest.mark.parametrize("p,m", [(2, 1), (2, 8), (3, 5), (4, 4), (4, 16), (8, 8), (8, 32)])
def test_passes_join_every_rank_in_one_order(family, p, m):
    schedule, base, orders = _orders(family, p, m)
    last = schedule.num_stages - 1
    for order in orders:
        sequences = [[s.collective for s in steps if s.collective is not None]
                     for steps in order]
        assert all(seq == sequences[0] for seq in sequences)
        assert sorted(sequences[0]) == sorted(Action(op, VOCAB_STAGE, mb)
                                              for op in "EOG" for mb in range(m))
        # the p2p operations are those of the order without the passes
        for steps, plain in zip(order, base):
            assert sorted(str(p2p) for s in steps for p2p in s.post) == \
                sorted(str(p2p) for s in plain for p2p in s.post)
            assert [s.run for s in steps if s.run] == [s.run for s in plain if s.run]

        def position(rank, item, order=order):
            return next(i for i, s in enumerate(order[rank]) if item in (s.run, s.collective))

        first, final = schedule.stage_rank[0], schedule.stage_rank[last]
        for mb in range(m):
            assert position(first, Action("E", VOCAB_STAGE, mb)) < \
                position(first, Action("F", 0, mb))
            assert position(final, Action("F", last, mb)) < \
                position(final, Action("O", VOCAB_STAGE, mb)) < \
                position(final, Action("B", last, mb))
            assert position(first, Action("B", 0, mb)) < position(first, Action("G", VOCAB_STAGE,
                                                                                  mb))


def test_simulation_times_the_passes_on_every_rank():
    schedule, base, orders = _orders("gpipe", 4, 8)
    plain = simulate(schedule, cost, order=base)
    sim = simulate(schedule, cost, order=orders[0])
    for rank in range(4):
        mine = [e for e in sim.events if e.rank == rank and e.action.op in "EOG"]
        assert len(mine) == 3 * 8
        assert sum(e.end - e.start for e in mine) == pytest.approx(8 * 0.7)
    # every rank spends 0.7 per microbatch more; GPipe loses nothing else to them here
    assert sim.step_time >= plain.step_time + 8 * 0.7 - 1e-9
    assert sim.step_time == pytest.approx(plain.step_time + 8 * 0.7)


def test_a_collective_out_of_order_is_refused():
    schedule, _, orders = _orders("1f1b", 2, 4)
    order = [list(steps) for steps in orders[0]]
    where = [i for i, s in enumerate(order[1]) if s.collective is not None and
             s.collective.op == "O"]
    a, b = where[0], where[1]
    order[1][a], order[1][b] = order[1][b], order[1][a]
    with pytest.raises(ScheduleError, match="collective order differs"):
        check_posting(schedule, tuple(tuple(s) for s in order))


def test_a_collective_before_a_send_its_peer_waits_for_deadlocks():
    schedule, _, orders = _orders("1f1b", 2, 4)
    order = [list(steps) for steps in orders[0]]
    # rank 0 joins the output pass of microbatch 0 before it sends that microbatch on
    o0 = Action("O", VOCAB_STAGE, 0)
    order[0].remove(Step(collective=o0))
    order[0].insert(1, Step(collective=o0))
    order[1].remove(Step(collective=o0))
    order[1].insert(order[1].index(Step(run=Action("F", 1, 0))) + 1, Step(collective=o0))
    with pytest.raises(ScheduleError, match="deadlock under NCCL's rules: rank 0 waits .* "
                       "collective O of microbatch 0"):
        check_posting(schedule, tuple(tuple(s) for s in order))


def test_searched_placement_costs_only_the_passes_at_p2():
    """1F1B with one more warm-up forward per rank: every output pass meets both ranks at
    a boundary, so the step grows by the passes' own time alone."""
    from parc.compiler.schedules.one_f_one_b import one_f_one_b
    from parc.compiler.schedules.validate import validate
    from parc.compiler.schedules.vocab import searched_vocab_order

    plain = validated("1f1b", 2, 16, 1)
    schedule = one_f_one_b(2, 16, extra_warmup=1)
    validate(schedule)
    order = searched_vocab_order(schedule, runnable_order(schedule), cost, None, check_posting,
                                 simulate)
    base = simulate(plain, cost, order=runnable_order(plain)).step_time
    assert simulate(schedule, cost, order=order).step_time == pytest.approx(base + 16 * 0.7)
    # the time-anchored placement on plain 1F1B waits for the action in progress each time
    _, _, simple = _orders("1f1b", 2, 16)
    assert min(simulate(plain, cost, order=o).step_time for o in simple) > base + 16 * 1.5
