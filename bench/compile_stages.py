"""Eager against compiled stages (`compile true`, torch.compile with inductor) in one run.

The same program, gpt_tiny as one stage in one process (the single-process path of
parc/runtime/train.py), trains eager and then compiled: the first steps warm up (the compiled
program's first step compiles its forward and backward), the median of the rest is the step
time. Prints a table and writes bench/out/compile_stages.json. Inductor on CPU needs a C++
compiler.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from parc.compiler.codegen.program import write_program  # noqa: E402
from parc.compiler.plan import make_plan  # noqa: E402
from parc.dsl.check import check_text  # noqa: E402
from parc.runtime.programs import Program  # noqa: E402
from parc.runtime.train import run_steps  # noqa: E402

WARMUP, STEPS = 2, 10


def spec_text(compiled: bool) -> str:
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 1)")
    body = "  mesh (pp = 1)\n  stages auto\n  schedule 1f1b\n" + (
        "  compile true\n" if compiled else "")
    return re.sub(r"parallel on (\w+) \{.*?\n\}", lambda m: f"parallel on {m.group(1)} {{\n"
                  f"{body}}}", text, flags=re.S)


def measure(compiled: bool, where: Path) -> dict:
    spec = check_text(spec_text(compiled), "gpt_tiny.par")
    program_dir = write_program(make_plan(spec), where / ("compiled" if compiled else "eager"),
                                "gpt_tiny.par", "torch")
    program = Program(program_dir, None)
    times: list[float] = []
    start = time.perf_counter()
    losses = run_steps(program, WARMUP + STEPS, on_step=lambda r: times.append(r["step_s"]))
    return {"mode": f"compiled ({program.backend})" if compiled else "eager",
            "first_step_s": times[0], "step_s": statistics.median(times[WARMUP:]),
            "total_s": time.perf_counter() - start, "last_loss": losses[-1]}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(compiled, Path(tmp)) for compiled in (False, True)]
    eager, compiled = rows
    ratio = eager["step_s"] / compiled["step_s"]
    print(f"gpt_tiny, one stage, {torch.get_num_threads()} threads, median of {STEPS} steps "
          f"after {WARMUP}")
    print(f"{'mode':<20} {'first step s':>12} {'step ms':>9} {'total s':>8} {'last loss':>10}")
    for r in rows:
        print(f"{r['mode']:<20} {r['first_step_s']:>12.2f} {r['step_s'] * 1e3:>9.2f} "
              f"{r['total_s']:>8.1f} {r['last_loss']:>10.4f}")
    print(f"eager / compiled step time: {ratio:.2f}x")
    out = ROOT / "bench" / "out" / "compile_stages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": "gpt_tiny", "warmup": WARMUP, "steps": STEPS,
                               "threads": torch.get_num_threads(), "rows": rows,
                               "eager_over_compiled": ratio}, indent=1) + "\n")


if __name__ == "__main__":
    main()
