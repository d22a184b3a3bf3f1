"""The single-process reference of a spec: the same model, data and optimizer with every
parallel axis removed, for the correctness contract (DESIGN.md section 6).

A skip schedule changes which layers each microbatch runs, so its reference keeps the same
stages and the plan's own per-microbatch paths (given, not searched for again: the search
weighs the plan's costs, which the reference does not have). Under `precision bf16` stages
send activations and their gradients in bf16, so the reference keeps the plan's stages too
(run in order, GPipe, in one process) and rounds where the plan rounds. Every other
reference is one stage holding the whole model, as `serial_spec` makes for inference
(`staged_spec` for an eval that omits stages).
"""

from __future__ import annotations

from dataclasses import replace

from ..dsl.spec import ScheduleSpec, Spec
from .plan import Plan


def reference_spec(spec: Spec, plan: Plan) -> Spec:
    """The reference runs eager: a plan under `compile` is held to the eager model."""
    spec = replace(spec, parallel=replace(spec.parallel, compile=False))
    if spec.parallel.schedule.name == "skip":
        staged = staged_spec(spec, plan)
        own = replace(spec.parallel.schedule, given=plan.schedule.paths)
        return replace(staged, parallel=replace(staged.parallel, schedule=own))
    if spec.train is not None and spec.train.precision == "bf16" and len(plan.stages) > 1:
        return staged_spec(spec, plan)
    return serial_spec(spec)


def staged_spec(spec: Spec, plan: Plan) -> Spec:
    """The spec in one process keeping the plan's stages, run in order (GPipe): what a
    reference needs where the stages matter, and what an eval that omits stages runs."""
    stages = tuple(tuple(s.units) for s in plan.stages)
    serial = replace(spec.parallel, mesh=(("pp", len(stages)),), sbp={}, stages=stages,
                     schedule=ScheduleSpec("gpipe"), recompute=(),
                     sequence_parallel=None, context_parallel=None)
    return replace(spec, parallel=serial)


def serial_spec(spec: Spec) -> Spec:
    """The spec as one stage in one process (all of the model, GPipe)."""
    serial = replace(spec.parallel, mesh=(("pp", 1),), sbp={}, stages="auto",
                     schedule=ScheduleSpec("gpipe"), recompute=(),
                     sequence_parallel=None, context_parallel=None)
    return replace(spec, parallel=serial)
