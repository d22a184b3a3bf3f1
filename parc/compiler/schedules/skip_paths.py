"""SkipPipe's paths: which stages each microbatch visits, chosen to shorten the step.

Every path set obeys the rules below (`path_rules` checks them):
- the first stage (embedding) and the last (head and loss) are on every path, and a path
  visits a stage at most once;
- skips total ratio * middle stages * microbatches, rounded, and every middle stage is
  skipped as often as every other, to one microbatch (each layer trains on the same share
  of the data: the convergence condition SkipPipe states for partial training);
- every microbatch skips as many stages as every other, to one (each sample goes through
  the same depth of model, to one stage);
- with `reorder`, a path may swap two adjacent middle stages it visits, at most once
  (SkipPipe's reordering, for the same model robustness to layer order it measures).

Within the rules, `choose_paths` searches for the set whose schedule the simulator finds
fastest under the runtime's posting order (collisions, where two microbatches want one rank
at once, and the idle time they leave show there): it starts from patterns that keep
microbatches out of each other's way (groups of microbatches that skip the same stages run
as a shallower pipeline side by side with the others) and improves the best by exchanging
skips between microbatches (which keeps the rules), a fixed number of tries from `seed`, so
the same spec always gets the same paths.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ...dsl.spec import skip_count

Paths = tuple[tuple[int, ...], ...]


def visit_shares(num_stages: int, m: int, ratio: float) -> tuple[float, ...]:
    """The share of microbatches each stage runs: all at the ends, the rest spread evenly."""
    middle = num_stages - 2
    if middle <= 0:
        return (1.0,) * num_stages
    inner = 1.0 - skip_count(num_stages, m, ratio) / (middle * m)
    return (1.0,) + (inner,) * middle + (1.0,)


def _per_microbatch(num_stages: int, m: int, ratio: float, place: str = "spread") -> list[int]:
    """How many stages each microbatch skips: the total spread evenly over the microbatches,
    or with the larger counts first (`front`) or last (`back`)."""
    total = skip_count(num_stages, m, ratio)
    counts = [(i + 1) * total // m - i * total // m for i in range(m)]
    if place == "spread":
        return counts
    return sorted(counts, reverse=place == "front")


def _paths(num_stages: int, skipped: list[set[int]]) -> Paths:
    return tuple(tuple(s for s in range(num_stages) if s not in chosen) for chosen in skipped)


def greedy_paths(num_stages: int, m: int, ratio: float, seed: int) -> Paths:
    """Microbatch by microbatch, skip the stages skipped least so far (ties by a seeded
    shuffle): the rules hold, nothing looks at time."""
    middle = list(range(1, num_stages - 1))
    rng = random.Random(seed)
    tiebreak = {s: rng.random() for s in middle}
    count = {s: 0 for s in middle}
    skipped = []
    for k in _per_microbatch(num_stages, m, ratio):
        chosen = set(sorted(middle, key=lambda s: (count[s], tiebreak[s]))[:k])
        for s in chosen:
            count[s] += 1
        for s in middle:  # reshuffle ties so the rotation does not repeat one pattern
            tiebreak[s] = rng.random()
        skipped.append(chosen)
    return _paths(num_stages, skipped)


def grouped_paths(num_stages: int, m: int, ratio: float, group: int, shift: int,
                  place: str = "spread") -> Paths:
    """Runs of `group` microbatches skip the same stages: the least skipped so far, ties
    by stage index rotated by `shift`. A run then flows through the stages it visits as a
    shallower pipeline, and runs that skip different stages interleave without colliding."""
    middle = list(range(1, num_stages - 1))
    count = {s: 0 for s in middle}
    skipped: list[set[int]] = []
    chosen: list[int] = []
    for i, k in enumerate(_per_microbatch(num_stages, m, ratio, place)):
        if i % group == 0 or len(chosen) != k:
            rank = {s: (s - 1 + shift) % len(middle) for s in middle}
            chosen = sorted(middle, key=lambda s: (count[s], rank[s]))[:k]
        for s in chosen:
            count[s] += 1
        skipped.append(set(chosen))
    return _balanced(num_stages, skipped)


def routed_paths(num_stages: int, m: int, ratio: float,
                 hop: Callable[[int, int], float]) -> Paths:
    """Microbatch by microbatch, the cheapest path by `hop(a, b)` (the time of a message
    from stage a to stage b) among those with its count of skips, each stage's earlier
    visits counted against it so the load stays even: paths that keep to fast links."""
    last = num_stages - 1
    if last < 2:  # no middle stage to skip
        return tuple(tuple(range(num_stages)) for _ in range(m))
    visits = {s: 0 for s in range(1, last)}
    scale = max(hop(a, b) for a in range(last) for b in range(a + 1, num_stages)) or 1.0
    skipped = []
    for k in _per_microbatch(num_stages, m, ratio):
        keep = last - 1 - k  # middle stages this path visits
        # best[(stage, kept)] = (cost, previous stage) over paths 0 .. stage
        best: dict[tuple[int, int], tuple[float, int]] = {(0, 0): (0.0, -1)}
        for b in range(1, num_stages):
            for a in range(b):
                for kept in range(keep + 1):
                    if (a, kept) not in best:
                        continue
                    now = kept + (b != last)
                    if now > keep or (b == last and kept != keep):
                        continue
                    load = visits[b] * scale if b != last else 0.0
                    cost = best[(a, kept)][0] + hop(a, b) + load
                    if (b, now) not in best or cost < best[(b, now)][0] - 1e-12:
                        best[(b, now)] = (cost, a)
        path, at, kept = [], last, keep
        while at > 0:
            path.append(at)
            prev = best[(at, kept)][1]
            kept -= at != last
            at = prev
        visited = set(path)
        for s in visited - {last}:
            visits[s] += 1
        skipped.append(set(range(1, last)) - visited)
    return _balanced(num_stages, skipped)


def _balanced(num_stages: int, skipped: list[set[int]]) -> Paths:
    """Move skips from the most to the least skipped stage until they differ by one at most
    (a run pattern can leave them two apart)."""
    middle = range(1, num_stages - 1)
    while len(middle) > 0:
        count = {s: sum(s in c for c in skipped) for s in middle}
        most, least = max(middle, key=count.get), min(middle, key=count.get)
        if count[most] - count[least] <= 1:
            return _paths(num_stages, skipped)
        for chosen in reversed(skipped):
            if most in chosen and least not in chosen:
                chosen.discard(most)
                chosen.add(least)
                break
    return _paths(num_stages, skipped)


def path_rules(paths: Paths, num_stages: int, m: int, ratio: float) -> str | None:
    """What breaks the rules above, or None."""
    if len(paths) != m:
        return f"{len(paths)} paths for {m} microbatches"
    last = num_stages - 1
    for i, path in enumerate(paths):
        if path[0] != 0 or path[-1] != last:
            return f"microbatch {i} does not start at stage 0 and end at stage {last}"
        if len(set(path)) != len(path) or not set(path) <= set(range(num_stages)):
            return f"microbatch {i} visits a stage twice or one that does not exist"
        swaps = [j for j in range(len(path) - 1) if path[j] > path[j + 1]]
        if len(swaps) > 1 or any(path[j] - path[j + 1] != 1 or path[j + 1] == 0 or
                                 path[j] == last for j in swaps):
            return f"microbatch {i} is reordered beyond one swap of adjacent middle stages"
    middle = range(1, last)
    if sum(num_stages - len(p) for p in paths) != skip_count(num_stages, m, ratio):
        return "the skips do not total the ratio's"
    per_stage = [sum(s not in p for p in paths) for s in middle]
    if per_stage and max(per_stage) - min(per_stage) > 1:
        return f"middle stages are skipped unevenly: {per_stage}"
    depth = [len(p) for p in paths]
    if max(depth) - min(depth) > 1:
        return "microbatches skip unevenly many stages"
    return None


def _swap_options(path: tuple[int, ...], last: int) -> list[int]:
    """Positions j where path[j], path[j + 1] are adjacent middle stages that may swap."""
    return [j for j in range(1, len(path) - 2) if path[j + 1] == path[j] + 1 and
            path[j + 1] < last]


def choose_paths(num_stages: int, m: int, ratio: float, seed: int,
                 step_time: Callable[[Paths], float], tries: int, reorder: bool = False,
                 hop: Callable[[int, int], float] | None = None) -> Paths:
    """The path set with the shortest `step_time` found: the patterns above (routed by
    `hop`, a message's time between two stages, when given; with `reorder`, the best of them
    with one pair of adjacent stages swapped in every path that visits both), then `tries`
    seeded exchanges (and, with `reorder`, single swaps) from the best, each kept when no
    slower."""
    last = num_stages - 1
    candidates = [greedy_paths(num_stages, m, ratio, seed)]
    if hop is not None:
        candidates.append(routed_paths(num_stages, m, ratio, hop))
    shifts = min(num_stages - 2, 3 if num_stages * m <= 128 else 1)  # fewer when large
    for place in ("spread", "front", "back"):
        for group in sorted({1, 2, 3, 4, max(1, m // 4)}):
            for shift in range(shifts):
                candidates.append(grouped_paths(num_stages, m, ratio, group, shift, place))
    scored: dict[Paths, float] = {}
    for paths in candidates:
        if paths not in scored:
            scored[paths] = step_time(paths)
    best = min(scored, key=lambda p: (scored[p], candidates.index(p)))
    if reorder:  # one swap alone breaks the rhythm; the same swap in every path may pay
        for s in range(1, last - 1):
            swapped = tuple(_swapped(path, s) for path in best)
            if swapped not in scored:
                scored[swapped] = step_time(swapped)
        best = min(scored, key=lambda p: scored[p])
    best_time = scored[best]
    rng = random.Random(seed)
    current = [list(p) for p in best]
    for _ in range(tries):
        trial = [list(p) for p in current]
        if reorder and rng.random() < 0.3:
            i = rng.randrange(m)
            options = _swap_options(tuple(trial[i]), last)
            already = any(a > b for a, b in zip(trial[i], trial[i][1:]))
            if already:
                trial[i] = sorted(trial[i])
            elif options:
                j = rng.choice(options)
                trial[i][j], trial[i][j + 1] = trial[i][j + 1], trial[i][j]
            else:
                continue
        elif rng.random() < 0.3 and m > 1:
            # microbatch i gives one of its skips to k, which skips one fewer: the stage's
            # count and the depth balance hold when i skips one more than k
            i, k = rng.sample(range(m), 2)
            if len(trial[i]) + 1 != len(trial[k]) or any(
                    a > b for p in (trial[i], trial[k]) for a, b in zip(p, p[1:])):
                continue
            given = sorted(set(trial[k]) - set(trial[i]) - {0, last})
            if not given:
                continue
            s = rng.choice(given)
            trial[i] = sorted(trial[i] + [s])
            trial[k] = [x for x in trial[k] if x != s]
        else:
            i, k = rng.sample(range(m), 2) if m > 1 else (0, 0)
            a = sorted(set(trial[k]) - set(trial[i]))  # skipped by i, visited by k
            b = sorted(set(trial[i]) - set(trial[k]))  # visited by i, skipped by k
            if not a or not b:
                continue
            s, t = rng.choice(a), rng.choice(b)
            trial[i] = _insert(trial[i], s, drop=t)
            trial[k] = _insert(trial[k], t, drop=s)
        paths = tuple(tuple(p) for p in trial)
        if paths not in scored:
            scored[paths] = step_time(paths)
        if scored[paths] <= best_time:
            current, best_time = trial, scored[paths]
    return tuple(tuple(p) for p in current)


def _swapped(path: tuple[int, ...], stage: int) -> tuple[int, ...]:
    """`path` with `stage` and `stage + 1` swapped where it visits one right after the
    other (and holds no swap yet)."""
    if any(a > b for a, b in zip(path, path[1:])):
        return path
    out = list(path)
    for j in range(len(out) - 1):
        if out[j] == stage and out[j + 1] == stage + 1:
            out[j], out[j + 1] = stage + 1, stage
    return tuple(out)


def _insert(path: list[int], stage: int, drop: int) -> list[int]:
    """`path` without `drop` and with `stage` in its place in stage order (a swap it held
    is given up)."""
    kept = [s for s in path if s != drop]
    out = [s for s in kept if s < stage] + [stage] + [s for s in kept if s > stage]
    if any(a > b for a, b in zip(kept, kept[1:])):
        return sorted(out)  # rebuilding a swap around a new stage: give it up
    return out
