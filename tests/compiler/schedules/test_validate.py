"""The validator on hand-made broken schedules."""

from dataclasses import replace

import pytest

from parc.compiler.schedules import build
from parc.compiler.schedules.schedule import Action
from parc.compiler.schedules.validate import ScheduleError, validate


def with_rank(schedule, r, actions):
    ranks = list(schedule.ranks)
    ranks[r] = tuple(actions)
    return replace(schedule, ranks=tuple(ranks))


def test_missing_action():
    s = build("1f1b", 2, 2)
    with pytest.raises(ScheduleError, match=r"B1.1 never runs"):
        validate(with_rank(s, 1, s.ranks[1][:-1]))


def test_duplicate_action():
    s = build("gpipe", 2, 2)
    with pytest.raises(ScheduleError, match="runs 2 times"):
        validate(with_rank(s, 0, s.ranks[0] + (s.ranks[0][0],)))


def test_action_on_the_wrong_rank():
    s = build("gpipe", 2, 1)
    bad = with_rank(with_rank(s, 0, [Action("F", 1, 0)] + list(s.ranks[0])),
                    1, [a for a in s.ranks[1] if a != Action("F", 1, 0)])
    with pytest.raises(ScheduleError, match="belongs to rank 1"):
        validate(bad)


def test_backward_before_forward_on_a_rank():
    s = build("gpipe", 2, 1)
    with pytest.raises(ScheduleError, match=r"rank 1, step 0: B1.0 runs before F1.0"):
        validate(with_rank(s, 1, list(reversed(s.ranks[1]))))


def test_p2p_order_mismatch():
    s = build("gpipe", 2, 2)
    # rank 1 consumes microbatch 1 before microbatch 0: receives come in the other order
    swapped = [Action("F", 1, 1), Action("F", 1, 0), Action("B", 1, 0), Action("B", 1, 1)]
    with pytest.raises(ScheduleError, match="p2p order differs"):
        validate(with_rank(s, 1, swapped))


def test_deadlock_names_rank_step_and_action():
    s = build("1f1b", 2, 2)
    # rank 0 waits for B0.0 before it sends F0.1, but rank 1 waits for F1.1 first
    rank0 = [Action("F", 0, 0), Action("B", 0, 0), Action("F", 0, 1), Action("B", 0, 1)]
    rank1 = [Action("F", 1, 0), Action("F", 1, 1), Action("B", 1, 0), Action("B", 1, 1)]
    with pytest.raises(ScheduleError, match=r"deadlock: rank 0 is stuck at step 1 on B0.0"):
        validate(with_rank(with_rank(s, 0, rank0), 1, rank1))


def test_every_family_validates():
    for family in ("gpipe", "1f1b", "interleaved", "zb_h1", "skip"):
        validate(build(family, 4, 8, virtual=2, ratio=0.5))
