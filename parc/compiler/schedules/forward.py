"""The forward-only schedule of evaluation: every microbatch through every stage (a skip
schedule's skips are a training device), each rank running its forwards in microbatch order,
its stages in order within one."""

from __future__ import annotations

from dataclasses import replace

from .schedule import Action, Schedule, full_paths
from .validate import validate


def forward_only(schedule: Schedule) -> Schedule:
    ranks = []
    for r in range(schedule.num_ranks):
        mine = [s for s in range(schedule.num_stages) if schedule.stage_rank[s] == r]
        ranks.append(tuple(Action("F", s, mb) for mb in range(schedule.num_microbatches)
                           for s in mine))
    out = replace(schedule, paths=full_paths(schedule.num_stages, schedule.num_microbatches),
                  split_backward=False, ranks=tuple(ranks), forward_only=True)
    validate(out)
    return out
