"""parc's generated pipeline against torch.distributed.pipelining, in the same run.

The same residual MLP (8 blocks of d -> 4d -> d and a classifier head), the same stages,
microbatches and schedule (GPipe, 1F1B, interleaved 1F1B with 2 chunks per rank), on 4 CPU
processes with gloo. Each side runs warm-up steps, then timed steps including the optimizer;
a step's time is the slowest rank's. Prints a table and writes bench/out/vs_torch_pipelining.json.

    python bench/vs_torch_pipelining.py            # launches itself with torchrun
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

D, HIDDEN, LAYERS, CLASSES, BATCH, MICRO, RANKS = 256, 1024, 8, 16, 64, 8, 4
WARMUP, STEPS = 2, 8
FAMILIES = {"gpipe": ("gpipe", 1), "1f1b": ("1f1b", 1), "interleaved": ("interleaved", 2)}

SPEC = """use std.nn
use std.hw

hardware cpu4 = std.hw.cpu(devices = {ranks})

def block(x: [b, d], hidden) {{
  h = gelu(linear(x, hidden) as fc1)
  return x + linear(h, d) as fc2
}}

model mlp(d = {d}, hidden = {hidden}, layers = {layers}, classes = {classes}) {{
  input x: f32[batch, d]
  input labels: i64[batch]
  for i in 0..layers {{
    x = block(x, hidden)
  }}
  logits = linear(x, classes) as head
  loss = cross_entropy(logits, labels)
  output loss
}}

train {{
  batch {batch}; microbatches {micro}; steps {steps}
  optimizer adamw(lr = 1e-3)
}}

parallel on cpu4 {{
  mesh (pp = {ranks})
{stages}
  schedule {schedule}
}}
"""


def spec_text(family: str) -> str:
    name, virtual = FAMILIES[family]
    chunks = RANKS * virtual
    per = LAYERS // chunks
    lines = []
    for s in range(chunks):
        items = f"block[{s * per}..{(s + 1) * per}]" + (", head" if s == chunks - 1 else "")
        lines.append(f"  stage {s} = {items}")
    schedule = f"interleaved(virtual = {virtual})" if virtual > 1 else name
    return SPEC.format(ranks=RANKS, d=D, hidden=HIDDEN, layers=LAYERS, classes=CLASSES,
                       batch=BATCH, micro=MICRO, steps=WARMUP + STEPS, stages="\n".join(lines),
                       schedule=schedule)


def compile_all(where: Path) -> dict[str, Path]:
    from parc.compiler.codegen.program import write_program
    from parc.compiler.plan import make_plan
    from parc.dsl.check import check_text

    out = {}
    for family in FAMILIES:
        spec = check_text(spec_text(family), f"mlp_{family}.par")
        out[family] = write_program(make_plan(spec), where / family, f"mlp_{family}.par")
    return out


# ---- workers (under torchrun) ------------------------------------------------------------


def _slowest(seconds: float) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def time_parc(program_dir: Path) -> list[float]:
    from parc.runtime.mesh import build_mesh
    from parc.runtime.programs import Program, load_program
    from parc.runtime.train import run_steps

    spec = load_program(program_dir)
    program = Program(program_dir, build_mesh(tuple(tuple(a) for a in spec["mesh"])))
    times: list[float] = []
    run_steps(program, WARMUP + STEPS, on_step=lambda r: times.append(_slowest(r["step_s"])))
    return times[WARMUP:]


def torch_stage(first: int, last: int, head: bool):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(D, HIDDEN), nn.Linear(HIDDEN, D)

        def forward(self, x):
            return x + self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))

    layers = [Block() for _ in range(first, last)]
    if head:
        layers.append(nn.Linear(D, CLASSES))
    torch.manual_seed(first)
    return nn.Sequential(*layers)


def time_torch(family: str) -> list[float]:
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import (
        PipelineStage,
        Schedule1F1B,
        ScheduleGPipe,
        ScheduleInterleaved1F1B,
    )

    rank = dist.get_rank()
    _, virtual = FAMILIES[family]
    chunks = RANKS * virtual
    per = LAYERS // chunks
    mine = [rank + k * RANKS for k in range(virtual)]
    micro = BATCH // MICRO
    stages, params = [], []
    for s in mine:
        module = torch_stage(s * per, (s + 1) * per, s == chunks - 1)
        params += list(module.parameters())
        example = torch.randn(micro, D)
        stages.append(PipelineStage(module, s, chunks, torch.device("cpu"),
                                    input_args=(example,)))

    def loss_fn(logits, labels):
        return torch.nn.functional.cross_entropy(logits, labels)

    if family == "interleaved":
        schedule = ScheduleInterleaved1F1B(stages, MICRO, loss_fn=loss_fn)
    else:
        cls = ScheduleGPipe if family == "gpipe" else Schedule1F1B
        schedule = cls(stages[0], MICRO, loss_fn=loss_fn)
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(WARMUP + STEPS):
        x = torch.randn(BATCH, D, generator=gen)
        y = torch.randint(0, CLASSES, (BATCH,), generator=gen)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if rank == 0:
            schedule.step(x)
        elif rank == RANKS - 1:
            schedule.step(target=y, losses=[])
        else:
            schedule.step()
        optimizer.step()
        times.append(_slowest(time.perf_counter() - start))
    return times[WARMUP:]


def worker(programs: dict[str, str], out: str) -> None:
    import torch.distributed as dist

    from parc.runtime.mesh import init_distributed

    init_distributed("gloo")
    results = {}
    for family, program in programs.items():
        dist.barrier()
        parc = time_parc(Path(program))
        dist.barrier()
        theirs = time_torch(family)
        results[family] = {"parc_s": statistics.median(parc),
                           "torch_s": statistics.median(theirs)}
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


# ---- launcher ----------------------------------------------------------------------------


def main() -> None:
    if "RANK" in os.environ:
        worker(json.loads(sys.argv[1]), sys.argv[2])
        return
    with tempfile.TemporaryDirectory() as tmp:
        programs = {k: str(v) for k, v in compile_all(Path(tmp)).items()}
        result_file = Path(tmp) / "result.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={RANKS}", __file__, json.dumps(programs),
                        str(result_file)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        results = json.loads(result_file.read_text())
    print(f"residual MLP d={D} hidden={HIDDEN} x{LAYERS}, batch {BATCH} in {MICRO} microbatches, "
          f"{RANKS} CPU processes (gloo); median of {STEPS} steps")
    print(f"{'schedule':<12} {'parc ms':>9} {'torch ms':>9} {'parc/torch':>11}")
    for family, r in results.items():
        r["ratio"] = r["parc_s"] / r["torch_s"]
        print(f"{family:<12} {r['parc_s'] * 1e3:>9.1f} {r['torch_s'] * 1e3:>9.1f} "
              f"{r['ratio']:>11.2f}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "vs_torch_pipelining.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
