"""Megatron's interleaved 1F1B: rank r holds model chunks r, r+p, ..., r+(v-1)p.

Microbatches go through the chunks in groups of p. Rank r warms up with 2(p-r-1) + (v-1)p
forwards, then alternates; the bubble shrinks to (p-1)/(v*m) of the ideal compute time.
"""

from __future__ import annotations

from .schedule import Action, Schedule, full_paths


def _action(op: str, k: int, r: int, p: int, v: int) -> Action:
    """The k-th forward (or backward) on rank r: its chunk and microbatch."""
    chunk = (k % (p * v)) // p
    if op == "B":
        chunk = v - 1 - chunk
    return Action(op, chunk * p + r, (k // (p * v)) * p + k % p)


def interleaved(p: int, m: int, v: int) -> Schedule:
    if m % p:
        raise ValueError(f"interleaved needs microbatches divisible by pp ({m} over {p})")
    total = m * v
    ranks = []
    for r in range(p):
        warmup = min((p - r - 1) * 2 + (v - 1) * p, total)
        actions = [_action("F", k, r, p, v) for k in range(warmup)]
        for k in range(total - warmup):
            actions += [_action("F", warmup + k, r, p, v), _action("B", k, r, p, v)]
        actions += [_action("B", k, r, p, v) for k in range(total - warmup, total)]
        ranks.append(tuple(actions))
    stages = p * v
    return Schedule("interleaved", p, stages, m, tuple(s % p for s in range(stages)),
                    full_paths(stages, m), False, tuple(ranks))
