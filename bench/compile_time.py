"""How long parc takes to check, lower, partition, schedule and simulate, as models grow.

Prints a table and writes bench/out/compile_time.json. Sizes: GPT-2-small-wide models with
12..96 layers on 8 pipeline ranks (interleaved, 4 chunks per rank) and 8..64 microbatches.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parc.compiler.plan import make_plan  # noqa: E402
from parc.dsl.check import check_text  # noqa: E402


def spec_text(layers: int, microbatches: int) -> str:
    text = (ROOT / "examples/gpt2_small.par").read_text()
    text = text.replace("layers = 12", f"layers = {layers}")
    text = text.replace("mesh (pp = 2, dp = 2, tp = 2)", "mesh (pp = 8)")
    text = text.replace("schedule 1f1b", "schedule interleaved(virtual = 4)")
    text = text.replace("batch 512; microbatches 16", f"batch 512; microbatches {microbatches}")
    return re.sub(r"  sbp \{.*?\n  \}\n", "", text, flags=re.S)


def measure(layers: int, microbatches: int) -> dict:
    text = spec_text(layers, microbatches)
    start = time.perf_counter()
    spec = check_text(text, f"gpt_{layers}.par")
    checked = time.perf_counter()
    plan = make_plan(spec)
    done = time.perf_counter()
    return {"layers": layers, "microbatches": microbatches, "ops": len(plan.graph.ops),
            "actions": sum(len(r) for r in plan.schedule.ranks),
            "check_s": checked - start, "plan_s": done - checked, "total_s": done - start}


def main() -> None:
    rows = [measure(layers, m) for layers in (32, 64, 96) for m in (8, 32, 64)]
    print(f"{'layers':>6} {'mb':>4} {'ops':>6} {'actions':>8} {'check s':>8} {'plan s':>8} "
          f"{'total s':>8}")
    for r in rows:
        print(f"{r['layers']:>6} {r['microbatches']:>4} {r['ops']:>6} {r['actions']:>8} "
              f"{r['check_s']:>8.3f} {r['plan_s']:>8.3f} {r['total_s']:>8.3f}")
    base = rows[0]["total_s"]
    print(f"largest / smallest: {rows[-1]['total_s'] / base:.1f}x")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "compile_time.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
