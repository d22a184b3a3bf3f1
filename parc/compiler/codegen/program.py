"""Writes the program directory: plan.json, stage_<k>.py, main.py, launch.txt.

The directory is written whole or not at all, and only where nothing else would be lost
(target.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from ...dsl.parallel import glob_regex
from ...ops.comm import COMMS
from ..plan import Plan
from ..report import plan_json
from ..schedules.forward import forward_only
from ..schedules.posting import order_json
from ..schedules.validate import runnable_order
from ..summary import model_flops
from ..vocab import refuse_to_run
from .emit import Emitter, StageCode
from .target import target_state, write_whole


def _env() -> Environment:
    return Environment(loader=PackageLoader("parc.compiler.codegen", "templates"),
                       undefined=StrictUndefined, keep_trailing_newline=True)


def launch_command(plan: Plan, out_dir: str) -> str:
    nproc = plan.spec.parallel.hardware.devices
    return f"torchrun --standalone --nproc_per_node={nproc} {out_dir}/main.py"


def program_json(plan: Plan, stages: list[StageCode], kernels: str = "torch") -> dict:
    spec, g = plan.spec, plan.graph
    train = spec.train
    highs = _input_ranges(plan)
    inputs = {}
    next_of = {i.name: i.next_of for i in spec.model.inputs}
    for name in g.inputs:
        v = g.values[name]
        shape = [d.subs({"batch": train.batch}).as_int() for d in v.type.shape]
        splits = [(axis, s.dim) for axis, s in (v.sbp.axes if v.sbp else ()) if s.kind == "S"]
        inputs[name] = {"dtype": v.type.dtype, "shape": shape, "high": highs.get(name, 2),
                        "splits": splits, "next_of": next_of.get(name)}
    sched = plan.schedule
    loss = g.values[dict(g.outputs).get("loss", g.outputs[0][1])]
    decayed = weight_decayed(spec)
    return {
        "model": spec.model.name,
        # what a checkpoint keeps of the spec: enough to export or sample from it alone
        "about": {"model": spec.model.name,
                  "hyper": spec.model.numbers,
                  "spec": spec.file if spec.file.startswith("<") else
                  str(Path(spec.file).resolve()),
                  "source": spec.sources.get(spec.file, ""), "data": spec.train.data.path},
        "mesh": [list(axis) for axis in (spec.parallel.mesh or (("pp", 1),))],
        "device": spec.parallel.hardware.device,
        "train": {"batch": train.batch, "microbatches": train.microbatches,
                  "steps": train.steps, "seed": train.seed, "grad_clip": train.grad_clip,
                  "init": train.init, "precision": train.precision,
                  "checkpoint": {"every": train.checkpoint_every, "dir": train.checkpoint_dir}
                  if train.checkpoint_every else None,
                  "optimizer": asdict(train.optimizer), "data": asdict(train.data),
                  "lr_schedule": {**asdict(train.lr_schedule),
                                  "decay_steps": train.lr_schedule.decay_steps or train.steps},
                  # MFU: the model's FLOPs per step over every device's peak
                  "model_flops": model_flops(g, train.microbatches),
                  "peak_flops": spec.parallel.hardware.devices * (
                      spec.parallel.hardware.flops_bf16 if train.precision == "bf16"
                      else spec.parallel.hardware.flops_f32),
                  "tokens_per_sample": _tokens_per_sample(plan),
                  "eval": {"every": train.eval_every, "batches": train.eval_batches,
                           "data": asdict(train.eval_data or train.data),
                           # the last tenth of the train file is held out when none is given
                           "holdout": train.eval_data is None and train.data.kind == "tokens"}
                  if train.eval_every else None},
        "inputs": inputs,
        "stages": [{"index": s.index, "rank": s.rank, "module": f"stage_{s.index}",
                    "class": s.class_name, "layers": s.layers, "live_in": s.live_in,
                    "live_out": s.live_out, "data_inputs": s.data_inputs,
                    "loss": s.loss is not None,
                    "params": [{"attr": p.attr, "name": p.name, "shape": p.shape,
                                "init": [p.init[0], list(p.init[1])], "splits": p.splits,
                                "decay": p.name in decayed}
                               for p in s.params]}
                   for s in stages],
        "shared_params": plan.shared_params,
        # targets a cross-entropy ignores a padding id of: input -> that id (the runtime counts
        # the others per microbatch over every rank that holds a share of them)
        "counted": {_root_input(g, op.inputs[1]): dict(op.attrs)["ignore_index"]
                    for op in g.ops if op.kind == "cross_entropy"
                    and dict(op.attrs).get("ignore_index", -1) >= 0},
        # the loss is a partial sum over these axes (each rank's share), whole over the others
        "loss_partial": [a for a, sbp in (loss.sbp.axes if loss.sbp else ()) if sbp.kind == "P"],
        "recompute": list(spec.parallel.recompute),
        "kernels": kernels,
        # each stage module under torch.compile with this backend (PARC_COMPILE_BACKEND
        # replaces it at run time), or false
        "compile": "inductor" if spec.parallel.compile else False,
        "schedule": {"family": sched.family, "stage_rank": list(sched.stage_rank),
                     "paths": [list(p) for p in sched.paths],
                     "split_backward": sched.split_backward,
                     "ranks": [[[a.op, a.stage, a.mb] for a in rank] for rank in sched.ranks],
                     # what each rank posts and runs, in order (validated under NCCL's rules)
                     "posting": order_json(runnable_order(sched)),
                     # evaluation: every microbatch through every stage, forward only
                     "eval_posting": order_json(runnable_order(forward_only(sched)))},
    }


def weight_decayed(spec) -> set[str]:
    """The parameters weight decay applies to: all but those `no_decay` names; by default the
    weight matrices (what a matmul multiplies by, directly or transposed), not the norm
    weights, biases and embedding tables (token or position)."""
    params = spec.model.params
    patterns = spec.train.no_decay
    if patterns is not None:
        regexes = [glob_regex(p) for p in patterns]
        return {p.name for p in params if not any(r.match(p.name) for r in regexes)}
    producer = {out: op for op in spec.model.ops for out in op.outputs}

    def source(value: int) -> int:  # through transposes and reshapes
        while value in producer and producer[value].kind in ("transpose", "reshape"):
            value = producer[value].inputs[0]
        return value

    multiplied = {source(v) for op in spec.model.ops if op.kind == "matmul" for v in op.inputs}
    tables = {op.inputs[1] for op in spec.model.ops if op.kind == "embedding"}
    return {p.name for p in params if p.value in multiplied - tables}


def _tokens_per_sample(plan: Plan) -> int:
    g = plan.graph
    first = g.values[g.inputs[0]].type if g.inputs else None
    if first is None or first.rank < 2:
        return 1
    return first.shape[1].as_int() or 1


def _root_input(g, name: str) -> str:
    producer = g.producers()
    while name in producer and producer[name].kind in COMMS:
        name = producer[name].inputs[0]
    return name


def _input_ranges(plan: Plan) -> dict[str, int]:
    """The exclusive upper bound of each integer input: the rows of the table it indexes, or
    the classes of the loss it labels."""
    g = plan.graph

    def root(name: str) -> str:  # the model input a value is, through communication
        return _root_input(g, name)

    out: dict[str, int] = {}
    for op in g.ops:
        if op.kind == "embedding" and root(op.inputs[0]) in g.inputs:
            out[root(op.inputs[0])] = g.values[op.inputs[1]].type.shape[0].as_int()
        if op.kind == "cross_entropy" and root(op.inputs[1]) in g.inputs:
            out[root(op.inputs[1])] = g.values[op.inputs[0]].type.shape[-1].as_int()
    return out


def write_program(plan: Plan, out_dir: str | Path, source: str,
                  kernels: str | None = None) -> Path:
    """Write the program; `kernels` overrides the spec's backend ("triton" or "torch").
    Raises ParcError (before compiling anything) where the directory may not be written."""
    refuse_to_run(plan.spec)
    out = Path(out_dir)
    target_state(out)
    backend = kernels or plan.spec.parallel.kernel_backend
    emitter = Emitter(plan, backend)
    stages = emitter.stages()
    env = _env()
    files = {}
    model = plan.spec.model.name
    for stage in stages:
        files[f"stage_{stage.index}.py"] = env.get_template("stage.py.j2").render(
            stage=stage, model=model, source=source)
    if emitter.fused:
        files["kernels.py"] = env.get_template("kernels.py.j2").render(
            kernels=emitter.fused, model=model)
    launch = launch_command(plan, str(out))
    files["main.py"] = env.get_template("main.py.j2").render(model=model, source=source,
                                                             launch=launch)
    files["launch.txt"] = launch + "\n"
    data = plan_json(plan)
    data["program"] = program_json(plan, stages, backend)
    files["plan.json"] = json.dumps(data, indent=1) + "\n"
    return write_whole(out, files)
