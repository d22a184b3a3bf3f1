"""GPT-2 small with and without `vocab_parallel pp`: blocks per stage, each rank's compute
and memory, and the simulated step time (`parc plan`'s figures, no run).

examples/gpt2_small.par with its tensor parallelism taken out (a mesh of pp x dp on the
8-GPU H100 node), at pp = 2 and 4, under 1F1B and GPipe. Prints a table and writes
bench/out/vocab_parallel.json.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parc.compiler.plan import make_plan  # noqa: E402
from parc.dsl.check import check_text  # noqa: E402


def spec_text(pp: int, schedule: str, vocab: bool) -> str:
    text = (ROOT / "examples/gpt2_small.par").read_text()
    text = text.replace("mesh (pp = 2, dp = 2, tp = 2)", f"mesh (pp = {pp}, dp = {8 // pp})")
    text = re.sub(r"    block\[\*\].*\n", "", text)
    return text.replace("  schedule 1f1b\n", f"  schedule {schedule}\n" +
                        ("  vocab_parallel pp\n" if vocab else ""))


def figures(pp: int, schedule: str, vocab: bool) -> dict:
    plan = make_plan(check_text(spec_text(pp, schedule, vocab), "gpt2_small_pp.par"))
    extra = 0.0 if plan.vocab is None else sum(plan.vocab.duration(op) for op in "EOG")
    compute = [0.0] * pp
    for st in plan.stages:
        compute[st.rank] += st.fwd + st.bwd_input + st.bwd_weight
    return {"pp": pp, "schedule": schedule, "vocab_parallel": vocab,
            "blocks": [sum(u.startswith("block[") for u in st.units) for st in plan.stages],
            "compute_ms_per_mb": [round((c + extra) * 1e3, 3) for c in compute],
            "memory_gb": [round(m.total / 1e9, 3) for m in plan.memory],
            "params_m": [round((m.params / 4) / 1e6, 2) for m in plan.memory],
            "step_ms": round(plan.predicted_step_s * 1e3, 3),
            "bubble": round(plan.simulation.bubble_ratio, 4)}


def main() -> None:
    rows = []
    for pp in (2, 4):
        for schedule in ("1f1b", "gpipe"):
            before, after = figures(pp, schedule, False), figures(pp, schedule, True)
            after["step_ratio"] = round(after["step_ms"] / before["step_ms"], 3)
            rows += [before, after]
    print(f"{'pp':>2} {'sched':>5} {'vocab':>5} {'blocks':>12} {'compute ms/mb per rank':>30} "
          f"{'memory GB per rank':>28} {'step ms':>9} {'bubble':>7} {'ratio':>6}")
    for r in rows:
        print(f"{r['pp']:>2} {r['schedule']:>5} {'yes' if r['vocab_parallel'] else 'no':>5} "
              f"{str(r['blocks']):>12} {str(r['compute_ms_per_mb']):>30} "
              f"{str(r['memory_gb']):>28} {r['step_ms']:>9.1f} {r['bubble']:>7.1%} "
              f"{r.get('step_ratio', ''):>6}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "vocab_parallel.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
