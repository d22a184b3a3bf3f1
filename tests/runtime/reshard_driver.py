"""Saves checkpoints, loads them under other plans and initialises programs from a weights
file, in one torchrun launch, recording what each rank holds and how many bytes it read.

Usage: torchrun --nproc_per_node=N reshard_driver.py JOBS_JSON

JOBS_JSON lists jobs, run in order, each {"do": "save" | "load" | "init", "program": DIR,
"dump": DIR} and for "load" "checkpoint": a step_K directory. "save" trains the program's
steps (its spec saves the checkpoint); every job writes DUMP/rank<R>.pt: this rank's
parameters and AdamW moments (name -> (splits, {kind: tensor})) and, for "load", the bytes
read through torch.distributed.checkpoint's file streams per file, or for "init" the bytes of
the weights' slices read. A job that raises writes DUMP/rank<R>.error instead, and the
next job runs.
"""

import json
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.filesystem import FileSystem

from parc.runtime import checkpoint, optim, weights
from parc.runtime.mesh import build_mesh, init_distributed
from parc.runtime.programs import Program, load_program
from parc.runtime.train import run_steps


class Counted:
    """A read stream that counts the bytes its reader takes from it."""

    def __init__(self, stream, counts: dict, name: str):
        self.stream, self.counts, self.name = stream, counts, name

    def _count(self, n: int) -> None:
        self.counts[self.name] = self.counts.get(self.name, 0) + n

    def read(self, *args):
        data = self.stream.read(*args)
        self._count(len(data))
        return data

    def readinto(self, buffer):
        n = self.stream.readinto(buffer)
        self._count(n or 0)
        return n

    def readline(self, *args):
        data = self.stream.readline(*args)
        self._count(len(data))
        return data

    def __getattr__(self, name):
        return getattr(self.stream, name)


def counting_streams(counts: dict) -> None:
    real = FileSystem.create_stream

    @contextmanager
    def create_stream(self, path, mode):
        with real(self, path, mode) as stream:
            yield Counted(stream, counts, Path(path).name) if "r" in mode else stream

    FileSystem.create_stream = create_stream


def state_of(program: Program, optimizer: torch.optim.Optimizer) -> dict:
    out = {}
    for name, (param, splits) in program.named_shards().items():
        moments = optimizer.state.get(param, {})
        out[name] = (splits, {"param": param.detach().clone(),
                              **{k: moments[k].clone() for k in ("exp_avg", "exp_avg_sq")
                                 if k in moments}})
    return out


def run(job: dict, program: Program, built: list, counts: dict) -> dict:
    record = {"bytes": {}}
    if job["do"] == "save":
        run_steps(program, program.spec["train"]["steps"])
        optimizer = built[-1]
    else:
        optimizer = optim.build(program)
    if job["do"] == "load":
        counts.clear()
        checkpoint.load(job["checkpoint"], program.named_shards(), program.copies(),
                        optimizer)
        record["bytes"] = dict(counts)
    record["state"] = state_of(program, optimizer)
    return record


def main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    init_distributed("gloo")
    counts: dict[str, int] = {}
    counting_streams(counts)
    slice_bytes = [0]
    real_read_box = getattr(weights, "read_box", None)  # (none before reads were sliced)

    def read_box(*args):
        out = real_read_box(*args)
        slice_bytes[0] += out.numel() * out.element_size()
        return out

    weights.read_box = read_box
    built = []
    real_build = optim.build
    optim.build = lambda program: built.append(real_build(program)) or built[-1]
    for job in jobs:
        spec = load_program(job["program"])
        mesh = build_mesh(tuple(tuple(a) for a in spec["mesh"]))
        dump = Path(job["dump"])
        dump.mkdir(parents=True, exist_ok=True)
        try:
            slice_bytes[0] = 0
            program = Program(job["program"], mesh)  # an "init" job reads its weights here
            init_bytes = slice_bytes[0]
            record = run(job, program, built, counts)
            torch.save({**record, "init_bytes": init_bytes}, dump / f"rank{mesh.rank}.pt")
        except Exception:
            (dump / f"rank{mesh.rank}.error").write_text(traceback.format_exc())
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
