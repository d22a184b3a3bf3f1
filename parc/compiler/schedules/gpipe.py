"""GPipe: every forward, then every backward."""

from __future__ import annotations

from .schedule import Action, Schedule, full_paths


def gpipe(p: int, m: int) -> Schedule:
    ranks = tuple(
        tuple(Action("F", r, mb) for mb in range(m)) + tuple(Action("B", r, mb) for mb in range(m))
        for r in range(p))
    return Schedule("gpipe", p, p, m, tuple(range(p)), full_paths(p, m), False, ranks)
