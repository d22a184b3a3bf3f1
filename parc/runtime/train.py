"""The training loop of a generated program: mesh, stages, data, schedule, gradient sync,
AdamW, metrics. `train(program_dir)` runs under torchrun; `reference_step` runs the same spec
in one process for the correctness contract."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from . import checkpoint, watchdog
from .checkpoint_meta import about
from .data import Data
from .executor import Executor
from .failure import record as record_failure
from .mesh import Mesh, build_mesh, first_step_timeout, init_distributed, steady_timeouts
from .metrics import Metrics
from .params import init_full, shard
from .programs import sibling
from .sync import GROUPS, GradientSync
from .weights import WeightsError, fit, load_weights


def load_program(program_dir: str | Path) -> dict:
    return json.loads((Path(program_dir) / "plan.json").read_text())["program"]


class Program:
    """The stages of a program that live on this rank, with their parameters initialised."""

    def __init__(self, program_dir: str | Path, mesh: Mesh | None):
        self.dir = Path(program_dir)
        self.spec = load_program(self.dir)
        self.mesh = mesh
        self.device = mesh.device if mesh is not None else torch.device("cpu")
        pp = mesh.coords.get("pp", 0) if mesh is not None else None
        groups = mesh.groups if mesh is not None else {}
        seed = self.spec["train"]["seed"]
        imported = load_weights(self.spec["train"]["init"]) if self.spec["train"].get("init") \
            else None
        self.modules: dict[int, torch.nn.Module] = {}
        for stage in self.spec["stages"]:
            if pp is not None and stage["rank"] != pp:
                continue
            cls = getattr(sibling(str(self.dir / "main.py"), stage["module"]), stage["class"])
            module = cls({axis: groups.get(axis) for axis, _ in self.spec["mesh"]})
            with torch.no_grad():
                for p in stage["params"]:
                    if imported is not None:
                        if p["name"] not in imported:
                            raise WeightsError(f"the weights file has no `{p['name']}` (it "
                                               f"has {len(imported)} tensors)")
                        full = fit(p["name"], imported[p["name"]], tuple(p["shape"]))
                    else:
                        full = init_full(p["name"], tuple(p["shape"]),
                                         (p["init"][0], tuple(p["init"][1])), seed)
                    getattr(module, p["attr"]).copy_(shard(full, self._splits(p["splits"])))
            self.modules[stage["index"]] = module.to(self.device)
        self.data_splits = {name: self._splits(d["splits"])
                            for name, d in self.spec["inputs"].items()}

    def _splits(self, splits) -> list[tuple[int, int, int]]:
        """(dim, ways, index) of this rank for each (axis, dim) that splits a tensor."""
        if self.mesh is None:
            return []
        return [(dim, self.mesh.size(axis), self.mesh.coords[axis]) for axis, dim in splits]

    def groups(self) -> list:
        """Every process group this rank is in: the mesh axes and the copies of parameters."""
        mesh_groups = [g for g in self.mesh.groups.values() if g is not None]
        copies = [g for (mesh_id, _), g in GROUPS.items()
                  if mesh_id == id(self.mesh) and g is not None]
        return mesh_groups + copies

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters()]

    def copies(self) -> dict[str, list[torch.nn.Parameter]]:
        """Parameter name -> every local tensor holding it (one per stage that keeps it)."""
        out: dict[str, list] = {}
        for stage in self.spec["stages"]:
            module = self.modules.get(stage["index"])
            if module is not None:
                for p in stage["params"]:
                    out.setdefault(p["name"], []).append(getattr(module, p["attr"]))
        return out

    def named_shards(self) -> dict[str, tuple[torch.nn.Parameter, list]]:
        """Parameter name -> (this rank's tensor, its (dim, ways, index) splits). A parameter
        kept on several stages appears once."""
        out = {}
        for stage in self.spec["stages"]:
            module = self.modules.get(stage["index"])
            if module is None:
                continue
            for p in stage["params"]:
                out.setdefault(p["name"], (getattr(module, p["attr"]),
                                           self._splits(p["splits"])))
        return out


def _optimizer(program: Program) -> torch.optim.Optimizer:
    """AdamW or SGD as one fused step over all of a rank's parameters (a multi-tensor kernel
    on CUDA, and on CPU too: stepping tensors one at a time costs a dozen ops each)."""
    spec = program.spec["train"]["optimizer"]
    params = program.parameters()
    if spec["name"] == "sgd":
        kwargs = dict(lr=spec["lr"], momentum=spec["momentum"],
                      weight_decay=spec["weight_decay"])
        make = torch.optim.SGD
    else:
        kwargs = dict(lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"],
                      weight_decay=spec["weight_decay"])
        make = torch.optim.AdamW
    try:
        return make(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a torch without a fused kernel for it
        return make(params, **kwargs)


class _GlobalLoss:
    """The step's loss: mean over microbatches, summed over the axes the loss is a partial sum
    on (as the plan's SBP says), taken once over the axes it is whole on. The all-reduce is
    launched when the last microbatch is done and read after the optimizer step, so it
    overlaps the gradient sync and the optimizer instead of stopping every rank."""

    def __init__(self, program: Program, losses: list[torch.Tensor]):
        local = torch.stack(losses).sum() / program.spec["train"]["microbatches"] if losses \
            else torch.zeros((), device=program.device)
        self.work = None
        if program.mesh is None:
            self.total = local.detach()
            return
        partial = set(program.spec["loss_partial"])
        owner = bool(losses) and all(program.mesh.coords[a] == 0 for a, _ in program.mesh.axes
                                     if a != "pp" and a not in partial)
        # NCCL: on the device
        self.total = torch.zeros((), dtype=torch.float64, device=program.device)
        if owner:
            self.total += local.detach().to(torch.float64)
        self.work = dist.all_reduce(self.total, async_op=True)

    def value(self) -> float:
        if self.work is not None:
            self.work.wait()
            self.work = None
        return float(self.total)


def _clip(program: Program, max_norm: float) -> None:
    """Clip by the global norm: every element of every parameter counted once, whether a
    shard is replicated over an axis or a parameter kept on several stages (a tied
    embedding on the first and the last). One reduction on the device, no host sync."""
    home = {}  # parameter -> the first stage that keeps it
    for stage in program.spec["stages"]:
        for p in stage["params"]:
            home.setdefault(p["name"], stage["index"])
    counted, grads = [], []
    for stage in program.spec["stages"]:
        module = program.modules.get(stage["index"])
        if module is None:
            continue
        for p in stage["params"]:
            param = getattr(module, p["attr"])
            if param.grad is None:
                continue
            grads.append(param.grad)
            if home[p["name"]] != stage["index"]:
                continue
            if program.mesh is not None:
                split_axes = {a for a, _ in p["splits"]}
                if any(program.mesh.coords[a] != 0 for a, _ in program.mesh.axes
                       if a != "pp" and a not in split_axes):
                    continue
            counted.append(param.grad)
    total = torch.zeros((), dtype=torch.float64, device=program.device)
    if counted:
        norms = torch._foreach_norm(counted)
        total += torch.stack(norms).double().pow(2).sum()
    if program.mesh is not None:
        dist.all_reduce(total)
    scale = (max_norm / (total.sqrt() + 1e-6)).clamp(max=1.0).float()
    if grads:
        torch._foreach_mul_(grads, scale)


def run_steps(program: Program, steps: int, metrics: Metrics | None = None,
              dump: str | None = None,
              on_step=None, resume: bool = False, trace: str | None = None,
              dump_steps: tuple[int, ...] | None = None) -> list[float]:
    """Train `steps` steps. `dump`: write loss, gradients and updated parameters after the last
    step into that directory, or after each of `dump_steps` into its `step<k>` there."""
    spec = program.spec
    train = spec["train"]
    data = Data(train["data"]["kind"], train["data"]["seed"], spec["inputs"], train["batch"],
                train["data"].get("path"), train["data"].get("dtype", "u16"))
    executor = Executor(spec, program.modules, program.mesh, program.device)
    sync = GradientSync(program, executor.last_passes())
    optimizer = _optimizer(program)
    ckpt = train.get("checkpoint")
    first = 0
    watchdog.at(None, "resume" if resume else "starting", executor)
    if resume:
        found = checkpoint.latest(ckpt["dir"]) if ckpt else None
        if found is None:
            raise FileNotFoundError("--resume: no complete checkpoint in "
                                    f"{ckpt['dir'] if ckpt else '(the spec sets none)'}")
        first = checkpoint.load(found, program.named_shards(), program.copies(), optimizer)
    if metrics is not None:
        metrics.start(first)
    losses = []
    for step in range(first, steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        traced = trace is not None and step == steps - 1  # the last step: warm
        if traced and program.mesh is not None:
            dist.barrier()  # every rank starts the traced step together
            start = time.perf_counter()
        watchdog.at(step, "step")
        result = executor.run(data.global_batch(step), program.data_splits, trace=traced,
                              sync=sync)
        watchdog.at(step, "gradient sync and optimizer")
        global_loss = _GlobalLoss(program, result.losses)
        sync.finish()
        if train.get("grad_clip"):
            _clip(program, train["grad_clip"])
        where = None
        if dump is not None and dump_steps is None and step == steps - 1:
            where = dump
        elif dump is not None and dump_steps is not None and step in dump_steps:
            where = str(Path(dump) / f"step{step}")
        if where is not None:
            _dump(program, where, global_loss.value(), "grads")
        optimizer.step()
        loss = global_loss.value()
        if where is not None:
            _dump(program, where, loss, "params")
        seconds = time.perf_counter() - start
        tokens = train["batch"] * train["tokens_per_sample"]
        record = {"step": step, "loss": loss, "step_s": seconds, "tokens_per_s": tokens / seconds}
        if metrics is not None:  # before the checkpoint: see metrics.py
            metrics.write(record)
        watchdog.step_took(seconds)
        if ckpt and (step + 1) % ckpt["every"] == 0:
            watchdog.at(step, "checkpoint")
            checkpoint.save(ckpt["dir"], step + 1, program.named_shards(), optimizer,
                            about(spec))
        if step == first and program.mesh is not None:
            steady_timeouts(program.groups())
        if traced:
            _write_trace(program, trace, result.events, step)
        losses.append(loss)
        if on_step is not None:
            on_step(record)
    return losses


def _write_trace(program: Program, directory: str, events: list, step: int) -> None:
    """Every rank's actions of the traced step, merged by rank 0 into one Chrome trace."""
    rank = program.mesh.rank if program.mesh is not None else 0
    pp = program.mesh.coords.get("pp", 0) if program.mesh is not None else 0
    mine = [{"rank": rank, "pp": pp, "op": op, "stage": s, "mb": mb, "start": a, "end": b}
            for op, s, mb, a, b in events]
    gathered = [None] * (dist.get_world_size() if program.mesh is not None else 1)
    if program.mesh is not None:
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if rank != 0:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    trace = [{"name": "process_name", "ph": "M", "pid": 0,
              "args": {"name": f"measured step {step}"}}]
    for part in gathered:
        for e in part:
            trace.append({"name": f"{e['op']}{e['stage']}.{e['mb']}", "cat": e["op"], "ph": "X",
                          "pid": 0, "tid": e["rank"], "ts": e["start"] * 1e6,
                          "dur": (e["end"] - e["start"]) * 1e6,
                          "args": {"stage": e["stage"], "microbatch": e["mb"], "pp": e["pp"]}})
        if part:
            trace.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": part[0]["rank"],
                          "args": {"name": f"rank {part[0]['rank']} (pp {part[0]['pp']})"}})
    (path / "measured_trace.json").write_text(json.dumps({"traceEvents": trace,
                                                          "displayTimeUnit": "ms"}))


def _dump(program: Program, directory: str, loss: float, what: str) -> None:
    rank = program.mesh.rank if program.mesh is not None else 0
    path = Path(directory) / f"{what}_rank{rank}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    shards = {}
    for name, (param, splits) in program.named_shards().items():
        tensor = param.grad if what == "grads" else param
        shards[name] = (tensor.detach().cpu().clone() if tensor is not None else None, splits)
    torch.save({"loss": loss, "shards": shards}, path)


def train(program_dir: str | Path, steps: int | None = None, out: str | None = None,
          dump: str | None = None, resume: bool = False,
          trace: str | None = None) -> list[float]:
    """Entry point under torchrun. The rank dies with its launcher and reports where it is
    (watchdog.py); an error is recorded for the launcher's summary (failure.py)."""
    rank = int(os.environ.get("RANK", "0"))
    job = Path(out) / "job" if out is not None else None
    patience = first_step_timeout("nccl").total_seconds() if torch.cuda.is_available() else 0.0
    beat = watchdog.start(rank, job, patience)
    try:
        init_distributed()
        spec = load_program(program_dir)
        mesh = build_mesh(tuple(tuple(a) for a in spec["mesh"]))
        program = Program(program_dir, mesh)
        steps = steps if steps is not None else spec["train"]["steps"]
        metrics = Metrics(Path(out) / "metrics.jsonl") if out is not None and mesh.rank == 0 \
            else None
        losses = run_steps(program, steps, metrics, dump, resume=resume, trace=trace)
    except BaseException as exc:
        # Leave at once: waiting for the others (a barrier, pending sends) would hang this
        # rank until the timeout; torchrun sees the exit and stops the whole job.
        if job is not None:
            record_failure(job, rank, exc, beat.step, beat.action())
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    if metrics is not None:
        metrics.close()
    watchdog.at(steps, "finishing")
    dist.barrier()
    dist.destroy_process_group()
    beat.stop()
    return losses


def reference_steps(program_dir: str | Path, steps: int = 1, dump: str | None = None,
                    dump_steps: tuple[int, ...] | None = None) -> list[float]:
    """The same program in this process, every stage here, no communication: it must be
    compiled from the spec with parallelism removed (a mesh of the pipeline axis alone)."""
    program = Program(program_dir, None)
    return run_steps(program, steps, None, dump, dump_steps=dump_steps)
