"""Megatron's interleaved 1F1B: rank r holds model chunks r, r+p, ..., r+(v-1)p.

Microbatches go through the chunks in groups of p. Rank r warms up with 2(p-r-1) + (v-1)p
forwards, then alternates; the bubble shrinks to (p-1)/(v*m) of the ideal compute time.
"""

from __future__ import annotations

from .schedule import Action, Schedule, full_paths


def _virtual(k: int, p: int, v: int, forward: bool) -> tuple[int, int]:
    """(chunk, microbatch) of the k-th forward (or backward) on a rank."""
    group = k % (p * v)
    chunk = group // p
    if not forward:
        chunk = v - 1 - chunk
    return chunk, (k // (p * v)) * p + k % p


def interleaved(p: int, m: int, v: int) -> Schedule:
    if m % p:
        raise ValueError(f"interleaved needs microbatches divisible by pp ({m} over {p})")
    total = m * v
    ranks = []
    for r in range(p):
        def fwd(k: int) -> Action:
            chunk, mb = _virtual(k, p, v, True)
            return Action("F", chunk * p + r, mb)

        def bwd(k: int) -> Action:
            chunk, mb = _virtual(k, p, v, False)
            return Action("B", chunk * p + r, mb)

        warmup = min((p - r - 1) * 2 + (v - 1) * p, total)
        actions = [fwd(k) for k in range(warmup)]
        for k in range(total - warmup):
            actions += [fwd(warmup + k), bwd(k)]
        actions += [bwd(k) for k in range(total - warmup, total)]
        ranks.append(tuple(actions))
    stages = p * v
    return Schedule("interleaved", p, stages, m, tuple(s % p for s in range(stages)),
                    full_paths(stages, m), False, tuple(ranks))
