"""1F1B (PipeDream-Flush): warm up with p-r-1 forwards, alternate one forward and one backward,
drain the backwards. Same bubble as GPipe, at most p-r microbatches in flight on rank r."""

from __future__ import annotations

from .schedule import Action, Schedule, full_paths


def one_f_one_b(p: int, m: int, extra_warmup: int = 0) -> Schedule:
    """`extra_warmup`: forwards every rank runs before its first backward beyond 1F1B's
    (one more lets the vocabulary passes of `vocab_parallel` meet every rank at a boundary
    of its actions; schedules/vocab.py), at that many more microbatches in flight."""
    ranks = []
    for r in range(p):
        warmup = min(p - r - 1 + extra_warmup, m)
        actions = [Action("F", r, mb) for mb in range(warmup)]
        for i in range(m - warmup):
            actions += [Action("F", r, warmup + i), Action("B", r, i)]
        actions += [Action("B", r, mb) for mb in range(m - warmup, m)]
        ranks.append(tuple(actions))
    return Schedule("1f1b", p, p, m, tuple(range(p)), full_paths(p, m), False, tuple(ranks))
