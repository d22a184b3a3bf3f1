"""ZeRO's memory, measured against the plan's prediction and against no ZeRO, in one run.

A GPT whose parameters dominate its memory trains a few steps under dp = 2 (two CPU
processes), once with every parameter replicated and once with the weights sharded over dp
(`*.w: S(0)@dp`: gathered where they are used, freed after, reduce-scattered once per step).
Each rank's peak is the peak of its live tensors (PARC_LIVE_BYTES=1: what a GPU's allocator
would report), after the optimizer's state exists. Prints a table and writes
bench/out/zero_memory.json.

    python bench/zero_memory.py [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# large enough that parameters matter, with microbatches of enough tokens that gathering a
# weight costs less than moving activations (the sbp pass picks whichever is cheaper)
MODEL = dict(vocab=256, d=192, heads=4, layers=6, seq=64)
BATCH, MICROBATCHES = 16, 2
PLANS = {
    "replicated": "    tokens, targets: S(0)@dp\n    *: B",
    "zero": "    tokens, targets: S(0)@dp\n    *.w: S(0)@dp",
}


def spec_text(sbp: str, model: dict = MODEL, batch: int = BATCH,
              microbatches: int = MICROBATCHES) -> str:
    """gpt_tiny at the given sizes on dp = 2, with these SBP rules."""
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 2)")
    text = re.sub(r"model gpt\([^)]*\)", "model gpt(" + ", ".join(
        f"{k} = {v}" for k, v in model.items()) + ")", text)
    text = re.sub(r"batch \d+; microbatches \d+", f"batch {batch}; microbatches {microbatches}",
                  text)
    body = f"  mesh (dp = 2)\n  sbp {{\n{sbp}\n  }}\n  stages auto\n  schedule 1f1b\n"
    return re.sub(r"parallel on (\w+) \{.*?\n\}", lambda m: f"parallel on {m.group(1)} {{\n"
                  f"{body}}}", text, flags=re.S)


def gathered_weights(program_dir: Path, program: dict) -> int:
    """The parameters the stages gather where they read them: their GATHERED entries (a
    def's calls list theirs in their class; the stage's listing holds every instance's)."""
    from parc.runtime.programs import sibling

    total = 0
    for stage in program["stages"]:
        cls = getattr(sibling(str(program_dir / "main.py"), stage["module"]), stage["class"])
        total += len(getattr(cls({axis: None for axis, _ in program["mesh"]}), "GATHERED", ()))
    return total


def measure(text: str, where: Path, steps: int) -> dict:
    """Train the spec with `parc run`; its predicted and measured peak bytes per rank."""
    where.mkdir(parents=True, exist_ok=True)
    spec = where / "spec.par"
    spec.write_text(text)
    env = {**os.environ, "PARC_LIVE_BYTES": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "parc.cli", "run", str(spec), "--out",
                          str(where / "run"), "--steps", str(steps), "--kernels", "torch"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"parc run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    records = [json.loads(line) for line in
               (where / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    plan_path = next((where / "run").rglob("plan.json"))
    plan = json.loads(plan_path.read_text())
    memory = plan["memory"][0]  # one pipeline rank: every dp rank holds the same
    return {"predicted": memory["total"], "predicted_parts": memory,
            "gathered_weights": gathered_weights(plan_path.parent, plan["program"]),
            "measured": [max(r["peak_mem_bytes"][k] for r in records)
                         for k in range(len(records[-1]["peak_mem_bytes"]))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sbp in PLANS.items():
            rows[name] = measure(spec_text(sbp), Path(tmp) / name, args.steps)
    print(f"{'plan':<12} {'gathered':>9} {'predicted MB':>13} {'measured MB (max rank)':>23} "
          f"{'measured/pred':>14} {'vs replicated':>14}")
    base = max(rows["replicated"]["measured"])
    for name, row in rows.items():
        got = max(row["measured"])
        row["ratio"] = got / row["predicted"]
        row["vs_replicated"] = got / base
        print(f"{name:<12} {row['gathered_weights']:>9} {row['predicted'] / 1e6:>13.2f} "
              f"{got / 1e6:>23.2f} "
              f"{row['ratio']:>14.3f} {row['vs_replicated']:>14.3f}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "zero_memory.json").write_text(json.dumps({"model": MODEL, "plans": rows}, indent=1))


if __name__ == "__main__":
    main()
