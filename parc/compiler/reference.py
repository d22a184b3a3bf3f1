"""The single-process reference of a spec: the same model, data and optimizer with every
parallel axis removed, for the correctness contract (DESIGN.md section 6).

A skip schedule changes which layers each microbatch runs, so its reference keeps the same
stages and per-microbatch paths. Under `precision bf16` stages send activations and their
gradients in bf16, so the reference keeps the plan's stages too (run in order, GPipe, in one
process) and rounds where the plan rounds. Every other reference is one stage holding the
whole model, as `serial_spec` makes for inference.
"""

from __future__ import annotations

from dataclasses import replace

from ..dsl.spec import ScheduleSpec, Spec
from .plan import Plan


def reference_spec(spec: Spec, plan: Plan) -> Spec:
    par = spec.parallel
    stages = tuple(tuple(s.units) for s in plan.stages)
    if par.schedule.name == "skip":
        serial = replace(par, mesh=(("pp", len(stages)),), sbp={}, stages=stages,
                         recompute=())
    elif spec.train is not None and spec.train.precision == "bf16" and len(stages) > 1:
        serial = replace(par, mesh=(("pp", len(stages)),), sbp={}, stages=stages,
                         schedule=ScheduleSpec("gpipe"), recompute=())
    else:
        return serial_spec(spec)
    return replace(spec, parallel=serial)


def serial_spec(spec: Spec) -> Spec:
    """The spec as one stage in one process (all of the model, GPipe)."""
    serial = replace(spec.parallel, mesh=(("pp", 1),), sbp={}, stages="auto",
                     schedule=ScheduleSpec("gpipe"), recompute=())
    return replace(spec, parallel=serial)
