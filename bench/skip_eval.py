"""SkipPipe's robustness claim, measured: a model trained with skipped stages loses less when
half of its middle stages are omitted at inference than one trained on the full pipeline.

    python bench/skip_eval.py [--steps 200] [--ratio 0.5] [--pp 4] [--layers 8]

Trains one GPT twice on the Python standard library's sources (examples/prepare_stdlib.py
writes the tokens first when they are missing) on `pp` CPU processes, one pipeline stage
each: once with `schedule 1f1b` (every microbatch through every stage) and once with
`schedule skip(ratio = R)`. Each checkpoint is then evaluated on the held-out files with
`parc eval`: the whole model, and with `--skip-ratio 0.5` (half the middle stages omitted).
Prints a table of losses and perplexities and writes bench/out/skip_eval.json. The figure
to read is each row's perplexity rise (half model over whole model), against the other row
of the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "stdlib"


def spec_text(schedule: str, pp: int, layers: int, steps: int, checkpoints: Path) -> str:
    return f"""use std.gpt
use std.hw

hardware cpu = std.hw.cpu(devices = {pp})

model gpt(vocab = 2048, d = 128, heads = 4, layers = {layers}, seq = 64) {{
  input tokens:  i64[batch, seq]
  input targets: i64[batch, seq] = next(tokens)
  x, wte = embed(tokens, vocab, d)
  for i in 0..layers {{
    x = block(x, heads)
  }}
  loss = lm_loss(x, wte, targets)
  output loss
}}

train {{
  batch 32; microbatches 8; steps {steps}
  optimizer adamw(lr = 3e-3, weight_decay = 0.1)
  lr_schedule cosine(warmup = 20, min_lr = 3e-4)
  data tokens("{DATA / 'train.bin'}", dtype = u16)
  eval_data tokens("{DATA / 'val.bin'}", dtype = u16)
  eval_batches 8
  checkpoint every {steps} to "{checkpoints}"
}}

parallel on cpu {{
  mesh (pp = {pp})
  stages auto
  schedule {schedule}
}}
"""


def parc(*args: str) -> str:
    command = "import sys; from parc.cli import main; sys.exit(main())"
    done = subprocess.run([sys.executable, "-c", command, *args], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"parc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def eval_loss(spec: Path, checkpoints: Path, *flags: str) -> float:
    out = parc("eval", str(spec), "--checkpoint", str(checkpoints), *flags)
    found = re.search(r"^loss (\S+)", out, re.M)
    assert found, out
    return float(found[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--ratio", type=float, default=0.5, help="the skip ratio trained with")
    parser.add_argument("--pp", type=int, default=4)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    if not (DATA / "train.bin").exists():
        subprocess.run([sys.executable, str(ROOT / "examples" / "prepare_stdlib.py")],
                       check=True)
    rows = []
    print(f"{'trained with':<22} {'train loss':>10} {'whole loss':>10} {'whole ppl':>9} "
          f"{'half loss':>9} {'half ppl':>8} {'ppl rise':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for schedule in ("1f1b", f"skip(ratio = {args.ratio})"):
            work = Path(tmp) / re.sub(r"\W+", "_", schedule)
            spec = work / "spec.par"
            work.mkdir()
            spec.write_text(spec_text(schedule, args.pp, args.layers, args.steps,
                                      work / "checkpoints"))
            parc("run", str(spec), "--out", str(work / "run"))
            steps = [json.loads(line) for line in
                     (work / "run" / "metrics.jsonl").read_text().splitlines()]
            train = sum(r["loss"] for r in steps[-10:]) / len(steps[-10:])
            whole = eval_loss(spec, work / "checkpoints")
            half = eval_loss(spec, work / "checkpoints", "--skip-ratio", "0.5")
            rise = math.exp(half) / math.exp(whole) - 1
            rows.append({"schedule": schedule, "train_loss_last10": train,
                         "whole_loss": whole, "half_loss": half,
                         "whole_ppl": math.exp(whole), "half_ppl": math.exp(half),
                         "ppl_rise": rise})
            print(f"{schedule:<22} {train:>10.4f} {whole:>10.4f} {math.exp(whole):>9.2f} "
                  f"{half:>9.4f} {math.exp(half):>8.2f} {rise:>8.1%}", flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "skip_eval.json").write_text(json.dumps(
        {"steps": args.steps, "pp": args.pp, "layers": args.layers, "ratio": args.ratio,
         "rows": rows}, indent=1))
    print("train loss: the last 10 steps' mean; whole and half: `parc eval` on the held-out "
          "files, half with --skip-ratio 0.5 (half the middle stages omitted); ppl rise: "
          "half over whole, minus one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
