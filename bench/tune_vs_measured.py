"""Honesty check of `parc tune`: do its predictions order real runs correctly?

Calibrates this machine (4 processes), tunes gpt_tiny on the calibrated hardware, then runs the
predicted top 3 and bottom 3 plans for real in one torchrun launch (two rounds over the six,
keeping each plan's better median: four processes share two cores here, and a plan measured
once can be 20-30% off) and compares predicted with measured step times. The claim checked:
the predicted best is within 15% of the measured best.
Prints a table and writes bench/out/tune_vs_measured.json.

    python bench/tune_vs_measured.py
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEVICES, STEPS, WARMUP, ROUNDS = 4, 16, 4, 2


def spec_with(hardware_block: str, parallel_block: str, microbatches: int | None = None) -> str:
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = re.sub(r"hardware cpu4 = .*\n", hardware_block, text)
    text = re.sub(r"parallel on \w+ \{.*?\n\}\n", parallel_block, text, flags=re.S)
    if microbatches is not None:
        text = re.sub(r"microbatches \d+", f"microbatches {microbatches}", text)
    return text


def worker(programs: list[str], out: str) -> None:
    import torch
    import torch.distributed as dist

    from parc.runtime.mesh import build_mesh, init_distributed
    from parc.runtime.programs import Program, load_program
    from parc.runtime.train import run_steps

    init_distributed("gloo")
    results = [float("inf")] * len(programs)
    # every plan in each round, so a slow minute of the machine does not land on one plan
    for _ in range(ROUNDS):
        for i, program_dir in enumerate(programs):
            spec = load_program(program_dir)
            program = Program(program_dir, build_mesh(tuple(tuple(a) for a in spec["mesh"])))
            times: list[float] = []

            def slowest(record, times=times):
                t = torch.tensor([record["step_s"]], dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                times.append(float(t))

            dist.barrier()
            run_steps(program, STEPS, on_step=slowest)
            results[i] = min(results[i], statistics.median(times[WARMUP:]))
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    if "RANK" in os.environ:
        worker(json.loads(sys.argv[1]), sys.argv[2])
        return
    from parc.api import calibrate
    from parc.compiler.codegen.program import write_program
    from parc.compiler.plan import make_plan
    from parc.compiler.tune import parallel_text, sbp_rules, tune
    from parc.dsl.check import check_text

    block = calibrate(DEVICES, "calibrated")
    print(block)
    spec = check_text(spec_with(block, "parallel on calibrated {\n  auto\n}\n"), "tiny.par")
    result = tune(spec, top=1000)
    ranked = result.ranked
    chosen = ranked[:3] + ranked[-3:]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for i, scored in enumerate(chosen):
            c = scored.candidate
            text = spec_with(block, parallel_text("calibrated", c, sbp_rules(spec, c.dp, c.tp,
                                                                              c.zero)),
                             c.microbatches)
            plan = make_plan(check_text(text, f"plan{i}.par"))
            dirs.append(str(write_program(plan, Path(tmp) / f"plan{i}", f"plan{i}.par")))
        out = Path(tmp) / "measured.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={DEVICES}", __file__, json.dumps(dirs), str(out)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL)
        measured = json.loads(out.read_text())
    rows = []
    print(f"gpt_tiny on {DEVICES} CPU processes: {result.considered} plans, "
          f"{len(ranked)} fit; predicted top 3 and bottom 3, measured: the better of "
          f"{ROUNDS} rounds' medians over {STEPS - WARMUP} steps")
    print(f"{'rank':>4} {'plan':<48} {'predicted ms':>12} {'measured ms':>12} {'meas/pred':>10}")
    for scored, seconds in zip(chosen, measured):
        position = ranked.index(scored) + 1
        rows.append({"rank": position, "plan": scored.candidate.label(),
                     "predicted_s": scored.step_s, "measured_s": seconds})
        print(f"{position:>4} {scored.candidate.label():<48} {scored.step_s * 1e3:>12.1f} "
              f"{seconds * 1e3:>12.1f} {seconds / scored.step_s:>10.2f}")
    best_measured = min(measured)
    predicted_best = measured[0]
    ok = predicted_best <= 1.15 * best_measured
    print(f"predicted best measures {predicted_best * 1e3:.1f} ms; the measured best is "
          f"{best_measured * 1e3:.1f} ms ({predicted_best / best_measured:.2f}x): "
          + ("within 15%" if ok else "NOT within 15%"))
    order_ok = max(measured[:3]) < min(measured[3:])
    print("every predicted top-3 plan measures faster than every bottom-3 plan: "
          + ("yes" if order_ok else "no"))
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "tune_vs_measured.json").write_text(json.dumps(
        {"hardware": block, "rows": rows, "within_15_percent": ok, "top_beats_bottom": order_ok},
        indent=1))


if __name__ == "__main__":
    main()
