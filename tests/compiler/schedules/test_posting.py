"""The executor's posting order under NCCL's rules: every family, p = 2..8, a range of m;
the orders that hang or swap on GPUs are caught with rank, step and action."""

from dataclasses import replace

import pytest

from parc.compiler.schedules import build
from parc.compiler.schedules.posting import P2P, Step
from parc.compiler.schedules.schedule import Action, Message
from parc.compiler.schedules.validate import (
    ScheduleError,
    check_posting,
    runnable_order,
    validate,
)


def grid():
    for p in range(2, 9):
        for m in sorted({1, 2, p, p + 1, 2 * p}):
            yield "gpipe", p, m, {}
            yield "1f1b", p, m, {}
            if m % p == 0:
                yield "interleaved", p, m, {"virtual": 2}
            if m >= p:
                yield "zb_h1", p, m, {}
            if p >= 3 and m >= p:
                yield "skip", p, m, {"ratio": 0.5, "seed": p + m}


@pytest.mark.parametrize("family, p, m, kw", list(grid()),
                         ids=lambda v: str(v) if not isinstance(v, dict) else "")
def test_every_family_posts_an_order_nccl_runs(family, p, m, kw):
    schedule = build(family, p, m, **kw)
    validate(schedule)  # includes a posting order that NCCL runs
    order = runnable_order(schedule)
    runs = [s.run for rank in order for s in rank if s.run is not None]
    assert sorted(runs) == sorted(a for rank in schedule.ranks for a in rank)


def test_interleaved_steady_state_batches_both_directions():
    """Megatron's step: a forward and the backward after it run back to back, then one group
    sends both results and receives both inputs of the next step."""
    order = runnable_order(build("interleaved", 2, 4, virtual=2))
    groups = [s.post for s in order[1] if s.post]
    assert any({p.op for p in g} == {"send", "recv"} and
               {p.message.kind for p in g} == {"act", "grad"} and len(g) == 4 for g in groups)


def _swap_receives(order, rank, i, j):
    """The posting order with two of a rank's receive groups exchanged."""
    steps = list(order[rank])
    steps[i], steps[j] = steps[j], steps[i]
    return tuple(tuple(steps) if r == rank else order[r] for r in range(len(order)))


def test_gpipe_receives_in_the_wrong_order_land_in_the_wrong_buffers():
    """rank 1 posts the receive for microbatch 1 before microbatch 0's: under NCCL the first
    activation sent lands in microbatch 1's buffer (a silently wrong loss on GPUs)."""
    s = build("gpipe", 2, 2)
    order = runnable_order(s)
    posts = [i for i, step in enumerate(order[1]) if step.post and
             step.post[0].message.kind == "act"]
    bad = _swap_receives(order, 1, posts[0], posts[1])
    with pytest.raises(ScheduleError, match=r"rank 0 -> rank 1: p2p order differs: message 0 "
                       r"is sent as act of microbatch 0 .* received as act of microbatch 1 "
                       r"\(stage 0->1, rank 1 step 0, before F1.0\)"):
        check_posting(s, bad)


def test_a_send_posted_where_the_peer_waits_on_its_own_send_deadlocks():
    """1F1B on p = 2 with each message in a group of its own and the gradient received before
    the second activation is sent: rank 0 waits on the gradient while rank 1 waits to hand
    rank 0 nothing it can take yet."""
    s = build("1f1b", 2, 2)

    def send(kind, src, dst, mb):
        return Step(post=(P2P(op="send", message=Message(kind, src, dst, mb), peer_stage=dst),))

    def recv(kind, src, dst, mb):
        return Step(post=(P2P(op="recv", message=Message(kind, src, dst, mb), peer_stage=src),))

    def run(op, stage, mb):
        return Step(run=Action(op, stage, mb))

    rank0 = (run("F", 0, 0), send("act", 0, 1, 0), run("F", 0, 1), recv("grad", 1, 0, 0),
             send("act", 0, 1, 1), run("B", 0, 0), recv("grad", 1, 0, 1), run("B", 0, 1))
    rank1 = (recv("act", 0, 1, 0), run("F", 1, 0), recv("act", 0, 1, 1), run("F", 1, 1),
             run("B", 1, 0), send("grad", 1, 0, 0), run("B", 1, 1), send("grad", 1, 0, 1))
    with pytest.raises(ScheduleError, match=r"deadlock under NCCL's rules: rank 0 waits at step "
                       r"3 \(before B0.0\) to recv grad of microbatch 0 \(stage 1->0\), but rank "
                       r"1 waits at step 2 \(before F1.1\) to recv act of microbatch 1"):
        check_posting(s, (rank0, rank1))


def test_1f1b_receives_the_gradient_after_the_forward_runs():
    """Megatron's 1F1B step: the forward runs, then one group sends its output and receives
    the next backward's gradient, so the forward overlaps the wait for it."""
    order = runnable_order(build("1f1b", 2, 4))
    steps = [s.run or [p.op + " " + p.message.kind for p in s.post] for s in order[0]]
    f1 = steps.index(Action("F", 0, 1))
    assert steps[f1 + 1] == ["send act", "recv grad"] and steps[f1 + 2] == Action("B", 0, 0)


def test_a_misordered_schedule_is_refused_before_anything_runs():
    s = build("1f1b", 3, 4)
    ranks = list(s.ranks)
    ranks[1] = (ranks[1][1], ranks[1][0]) + ranks[1][2:]  # F1.1 before F1.0
    with pytest.raises(ScheduleError, match="p2p order differs"):
        validate(replace(s, ranks=tuple(ranks)))
