"""Runs several compiled programs in one torchrun launch (launching costs ~10 s on 2 cores).

Usage: torchrun --nproc_per_node=N driver.py STEPS PROGRAM_DIR DUMP_DIR [...]

After each program rank 0 writes DUMP_DIR/losses.txt and DUMP_DIR/done, so a launch that
fails part-way says which programs finished; under `compile` every rank writes what
torch.compile captured into DUMP_DIR/compiled_rank<R>.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from parc.runtime.mesh import build_mesh, init_distributed
from parc.runtime.programs import Program, load_program
from parc.runtime.train import run_steps


def dumped_steps(steps: int) -> tuple[int, ...]:
    """The steps after which a run dumps its loss, gradients and parameters: the first, the
    last, and the one before the last (the state the last step starts from)."""
    return tuple(sorted({k for k in (0, steps - 2, steps - 1) if k >= 0}))


def main() -> None:
    steps = int(sys.argv[1])
    pairs = sys.argv[2:]
    init_distributed("gloo")
    for program_dir, dump in zip(pairs[::2], pairs[1::2]):
        spec = load_program(program_dir)
        mesh = build_mesh(tuple(tuple(a) for a in spec["mesh"]))
        program = Program(program_dir, mesh)
        torch._dynamo.utils.counters.clear()
        losses = run_steps(program, steps, dump=dump, dump_steps=dumped_steps(steps))
        if program.backend is not None:  # what this rank compiled: the test checks it ran
            Path(dump).mkdir(parents=True, exist_ok=True)
            stats = torch._dynamo.utils.counters["stats"]
            Path(dump, f"compiled_rank{mesh.rank}.json").write_text(json.dumps(
                {"backend": program.backend, "stages": sorted(program.runners),
                 "unique_graphs": stats["unique_graphs"], "calls": stats["calls_captured"]}))
        dist.barrier()
        if mesh.rank == 0:
            Path(dump).mkdir(parents=True, exist_ok=True)
            Path(dump, "losses.txt").write_text("\n".join(repr(x) for x in losses) + "\n")
            Path(dump, "done").write_text("")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
