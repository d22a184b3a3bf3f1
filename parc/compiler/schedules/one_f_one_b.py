"""1F1B (PipeDream-Flush): warm up with p-r-1 forwards, alternate one forward and one backward,
drain the backwards. Same bubble as GPipe, at most p-r microbatches in flight on rank r."""

from __future__ import annotations

from .schedule import Action, Schedule, full_paths


def one_f_one_b(p: int, m: int) -> Schedule:
    ranks = []
    for r in range(p):
        warmup = min(p - r - 1, m)
        actions = [Action("F", r, mb) for mb in range(warmup)]
        for i in range(m - warmup):
            actions += [Action("F", r, warmup + i), Action("B", r, i)]
        actions += [Action("B", r, mb) for mb in range(m - warmup, m)]
        ranks.append(tuple(actions))
    return Schedule("1f1b", p, p, m, tuple(range(p)), full_paths(p, m), False, tuple(ranks))
