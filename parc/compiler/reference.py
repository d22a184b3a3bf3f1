"""The single-process reference of a spec: the same model, data and optimizer with every
parallel axis removed, for the correctness contract (DESIGN.md section 6).

A skip schedule changes which layers each microbatch runs, so its reference keeps the same
stages and per-microbatch paths; every other reference is one stage holding the whole model.
"""

from __future__ import annotations

from dataclasses import replace

from ..dsl.spec import ScheduleSpec, Spec
from .plan import Plan


def reference_spec(spec: Spec, plan: Plan) -> Spec:
    par = spec.parallel
    if par.schedule.name == "skip":
        mesh = (("pp", par.axis_size("pp")),)
        stages = tuple(tuple(s.units) for s in plan.stages)
        schedule = par.schedule
    else:
        mesh, stages, schedule = (("pp", 1),), "auto", ScheduleSpec("gpipe")
    serial = replace(par, mesh=mesh, sbp={}, stages=stages, schedule=schedule, recompute=())
    return replace(spec, parallel=serial)
