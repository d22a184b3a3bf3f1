"""Greedy list scheduling: run the ready action with the earliest start, backward first.

Used by the families whose order is not a fixed formula (zero bubble, skip paths). The order
is found with uniform costs; the simulator then replays it with the cost model's.
"""

from __future__ import annotations

from collections.abc import Callable

from .schedule import Action, Schedule

PRIORITY = {"B": 0, "F": 1, "W": 2}


def list_schedule(template: Schedule, limits: list[int], cost: Callable[[Action], float],
                  b_limits: list[int] | None = None, backward_first: bool = True) -> Schedule:
    """Order `template`'s actions per rank (its `ranks` are ignored).

    `limits[r]` caps the microbatches rank r holds activations for (forward done, last
    backward part not yet); `b_limits[r]`, when given, also caps those whose B has not run;
    `cost(action)` is its duration (uniform in the families, the cost model's in a plan).
    Among actions that can start at once, B goes first (or F, with backward_first=False).
    """
    priority = PRIORITY if backward_first else {"F": 0, "B": 1, "W": 2}
    expected = template.expected_actions()
    last_part = "F" if template.forward_only else "W" if template.split_backward else "B"
    done: dict[Action, float] = {}
    free = [0.0] * template.num_ranks
    inflight = [0] * template.num_ranks
    before_b = [0] * template.num_ranks
    order: list[list[Action]] = [[] for _ in range(template.num_ranks)]
    next_f_mb: dict[int, int] = {}  # stage -> index into its microbatches, forwards in order
    stage_mbs = {s: [m for m, path in enumerate(template.paths) if s in path]
                 for s in range(template.num_stages)}

    deps = {a: template.dependencies(a) for a in expected}
    waiting = {a: len(d) for a, d in deps.items()}  # dependencies not yet done
    dependents: dict[Action, list[Action]] = {a: [] for a in expected}
    for a, d in deps.items():
        for dep in d:
            dependents[dep].append(a)
    ready_at: dict[Action, float] = {}  # actions whose dependencies are done: since when
    ready: list[set[Action]] = [set() for _ in range(template.num_ranks)]
    for a, n in waiting.items():
        if n == 0:
            ready_at[a] = 0.0
            ready[template.stage_rank[a.stage]].add(a)

    def choice(r: int) -> tuple[float, int, Action] | None:
        best = None
        for action in ready[r]:
            if action.op == "F":
                mbs = stage_mbs[action.stage]
                if mbs[next_f_mb.get(action.stage, 0)] != action.mb:
                    continue  # forwards of a stage run in microbatch order
                if not template.forward_only and (inflight[r] >= limits[r] or (
                        b_limits is not None and before_b[r] >= b_limits[r])):
                    continue
            start = max(ready_at[action], free[r])
            key = (start, priority[action.op], action.mb, action.stage)
            if best is None or key < best[0]:
                best = (key, action)
        if best is None:
            return None
        return best[0][0], r, best[1]

    # each rank's next action, kept until something changes on that rank
    chosen = {r: choice(r) for r in range(template.num_ranks)}
    remaining = len(expected)
    while remaining:
        heap = [c for c in chosen.values() if c is not None]
        if not heap:
            raise RuntimeError("list scheduling found no runnable action")
        start, r, action = min(heap, key=lambda c: (c[0], priority[c[2].op], c[1]))
        done[action] = start + cost(action)
        free[r] = done[action]
        ready[r].discard(action)
        order[r].append(action)
        remaining -= 1
        if action.op == "F":
            next_f_mb[action.stage] = next_f_mb.get(action.stage, 0) + 1
            inflight[r] += 1
            before_b[r] += 1
        if action.op == "B":
            before_b[r] -= 1
        if action.op == last_part and not template.forward_only:
            inflight[r] -= 1
        changed = {r}
        for a in dependents[action]:
            waiting[a] -= 1
            if waiting[a] == 0:
                ready_at[a] = max(done[d] for d in deps[a])
                ready[template.stage_rank[a.stage]].add(a)
                changed.add(template.stage_rank[a.stage])
        for k in changed:
            chosen[k] = choice(k)
    return Schedule(template.family, template.num_ranks, template.num_stages,
                    template.num_microbatches, template.stage_rank, template.paths,
                    template.split_backward, tuple(tuple(o) for o in order),
                    template.forward_only)
