"""The training loop of a generated program: each step runs the schedule (executor.py), syncs
the gradients (sync.py), reduces the loss and clips (step_totals.py), steps the optimizer
(optim.py), writes metrics, dumps (dumps.py) and checkpoints. `train(program_dir)` runs under
torchrun; `reference_steps` runs the same spec in one process for the correctness contract.
The stages this rank runs are loaded by programs.py."""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from . import dumps, live_bytes, optim, watchdog
from .checkpoint_meta import about
from .data import Data
from .executor import Executor
from .failure import record as record_failure
from .mesh import build_mesh, first_step_timeout, init_distributed, steady_timeouts
from .metrics import Metrics
from .programs import Program, load_program
from .step_totals import reduce_loss, reduce_step
from .sync import GradientSync
from .tensorboard import Board


def run_steps(program: Program, steps: int, metrics: Metrics | None = None,
              dump: str | None = None, on_step=None, resume: bool = False, trace: str | None = None,
              dump_steps: tuple[int, ...] | None = None, from_step: int = 0) -> list[float]:
    """Train up to step `steps`, from step `from_step` (or a resumed checkpoint's). `dump`: write
    loss, gradients and updated parameters after the last step into that directory, or after
    each of `dump_steps` into its `step<k>` there."""
    spec = program.spec
    train = spec["train"]
    evaluation = train.get("eval")
    data = Data(train["data"]["kind"], train["data"]["seed"], spec["inputs"], train["batch"],
                train["data"].get("path"), train["data"].get("dtype", "u16"),
                "train" if evaluation and evaluation["holdout"] else "all")
    executor = Executor(spec, program.runners, program.mesh, program.device)
    sync = GradientSync(program, executor.last_passes())
    optimizer = optim.build(program)
    ckpt = train.get("checkpoint")
    if ckpt or resume:  # torch.distributed.checkpoint costs every rank ~0.8 s of its start
        from . import checkpoint
    first = from_step
    if resume:
        found = checkpoint.latest(ckpt["dir"]) if ckpt else None
        if found is None:
            raise FileNotFoundError("--resume: no complete checkpoint in "
                                    f"{ckpt['dir'] if ckpt else '(the spec sets none)'}")
        first = checkpoint.load(found, program.named_shards(), program.copies(), optimizer)
    watchdog.at(None, "resume" if resume else "starting", executor)
    if metrics is not None:
        metrics.start(first)
    losses = []
    # PARC_LIVE_BYTES=1: peak memory counts the bytes of live tensors (live_bytes.py)
    with live_bytes.tracking(program.device, program.parameters()):
        for step in range(first, steps):
            start = time.perf_counter()
            lr = optim.set_lr(optimizer, program, step)
            optimizer.zero_grad(set_to_none=True)
            traced = trace is not None and step == steps - 1  # the last step: warm
            if traced and program.mesh is not None:
                dist.barrier()  # every rank starts the traced step together
                start = time.perf_counter()
            watchdog.at(step, "step")
            result = executor.run(data, step, program.data_splits, trace=traced, sync=sync)
            watchdog.at(step, "gradient sync and optimizer")
            sync.finish()
            totals = reduce_step(program, result.losses, train.get("grad_clip"))
            loss = totals.loss
            where = None
            if dump is not None and dump_steps is None and step == steps - 1:
                where = dump
            elif dump is not None and dump_steps is not None and step in dump_steps:
                where = str(Path(dump) / f"step{step}")
            if where is not None:
                dumps.write_shards(program, where, loss, "grads")
            optimizer.step()
            if where is not None:
                dumps.write_shards(program, where, loss, "params")
            seconds = time.perf_counter() - start
            if step == first and program.mesh is not None:
                steady_timeouts(program.groups())
            if traced:
                dumps.write_trace(program, trace, result.events, step)
            losses.append(loss)
            tokens = train["batch"] * train["tokens_per_sample"]
            if evaluation and (step + 1) % evaluation["every"] == 0:
                record_eval = evaluate(program, executor, evaluation)
            else:
                record_eval = None
            record = {"step": step, "loss": loss, "lr": lr, "grad_norm": totals.grad_norm,
                      "step_s": seconds, "tokens_per_s": tokens / seconds,
                      "mfu": train.get("model_flops", 0.0) / (
                          seconds * train.get("peak_flops", 1.0)),
                      "peak_mem_bytes": totals.peak_bytes}
            if record_eval is not None:
                record["eval_loss"] = record_eval
            if metrics is not None:  # before the checkpoint: see metrics.py
                metrics.write(record)
            if on_step is not None:
                on_step(record)
            watchdog.step_took(seconds)
            if ckpt and (step + 1) % ckpt["every"] == 0:
                watchdog.at(step, "checkpoint")
                checkpoint.save(ckpt["dir"], step + 1, program.named_shards(), optimizer,
                                about(spec))
    return losses


def eval_data(program: Program, evaluation: dict) -> Data:
    """The held-out batches: the eval file, the last tenth of the train file, or for
    synthetic data another stream of the same language."""
    source = evaluation["data"]
    part = "heldout" if evaluation["holdout"] else "all"
    seed = source["seed"] + (1_000_003 if source["kind"] == "synthetic" else 0)
    return Data(source["kind"], seed, program.spec["inputs"], program.spec["train"]["batch"],
                source.get("path"), source.get("dtype", "u16"), part)


def evaluate(program: Program, executor: Executor, evaluation: dict,
             paths: list[list[int]] | None = None) -> float:
    """The mean loss over the eval batches (the same batches at every evaluation), through
    every stage or (one process) each microbatch's `paths`."""
    data = eval_data(program, evaluation)
    losses = [reduce_loss(program, executor.evaluate(data, k, program.data_splits, paths))
              for k in range(evaluation["batches"])]
    return sum(losses) / len(losses)


def train(program_dir: str | Path, steps: int | None = None, out: str | None = None,
          dump: str | None = None, resume: bool = False, trace: str | None = None,
          tensorboard: str | None = None) -> list[float]:
    """Entry point under torchrun. The rank dies with its launcher and reports where it is
    (watchdog.py); an error is recorded for the launcher's summary (failure.py)."""
    rank = int(os.environ.get("RANK", "0"))
    job = Path(out) / "job" if out is not None else None
    patience = first_step_timeout("nccl").total_seconds() if torch.cuda.is_available() else 0.0
    beat = watchdog.start(rank, job, patience)
    metrics = board = None
    try:
        init_distributed()
        spec = load_program(program_dir)
        mesh = build_mesh(tuple(tuple(a) for a in spec["mesh"]))
        program = Program(program_dir, mesh)
        steps = steps if steps is not None else spec["train"]["steps"]
        if out is not None and mesh.rank == 0:
            metrics = Metrics(Path(out) / "metrics.jsonl")
        if tensorboard is not None and mesh.rank == 0:
            board = Board(tensorboard)
        losses = run_steps(program, steps, metrics, dump, resume=resume, trace=trace,
                           on_step=board)
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
    if board is not None:
        board.close()
    watchdog.at(steps, "finishing")
    dist.barrier()
    dist.destroy_process_group()
    beat.stop()
    return losses


def reference_steps(program_dir: str | Path, steps: int = 1, dump: str | None = None,
                    dump_steps: tuple[int, ...] | None = None, from_step: int = 0,
                    params: dict[str, torch.Tensor] | None = None) -> list[float]:
    """The same program in this process, every stage here, no communication: it must be
    compiled from the spec with parallelism removed (a mesh of the pipeline axis alone).
    `params` (name -> full tensor) replaces the initial parameters, to take steps from
    `from_step` on from a state another run reached."""
    program = Program(program_dir, None)
    if params is not None:
        with torch.no_grad():
            for name, tensors in program.copies().items():
                for tensor in tensors:
                    tensor.copy_(params[name])
    return run_steps(program, steps, None, dump, dump_steps=dump_steps, from_step=from_step)
