"""Runs a program one step and records, for each gradient bucket, whether its all-reduce was
launched inside the stage's last backward pass (overlapping it) or after it.

Usage: torchrun --nproc_per_node=N overlap_driver.py OUT_DIR PROGRAM_DIR BUCKET_BYTES
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from parc.runtime import sync as sync_module
from parc.runtime.mesh import build_mesh, init_distributed
from parc.runtime.programs import Program, load_program
from parc.runtime.train import run_steps


def main() -> None:
    out, program_dir = Path(sys.argv[1]), sys.argv[2]
    sync_module.SYNC_BUCKET_BYTES = int(sys.argv[3])  # small buckets: several per stage
    init_distributed("gloo")
    mesh = build_mesh(tuple(tuple(a) for a in load_program(program_dir)["mesh"]))
    program = Program(program_dir, mesh)
    launches = []
    real_launch = sync_module.Bucket.launch
    syncs = []
    real_init = sync_module.GradientSync.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        syncs.append(self)

    def launch(bucket):
        if bucket.work is None:
            launches.append({"inside": bool(syncs and bucket.stage in syncs[-1].armed),
                             "params": len(bucket.params)})
        real_launch(bucket)

    sync_module.GradientSync.__init__ = init
    sync_module.Bucket.launch = launch
    run_steps(program, 1)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(launches))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
