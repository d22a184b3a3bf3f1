"""`parc tune` against the published Megatron-LM configurations.

Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM" (SC'21), Table 1: GPT models with sequence 2048 and vocabulary 51,200 trained on
DGX A100 nodes (8 x 80 GB), mixed precision. For each row we write the matching spec (our GPT
blocks: pre-LayerNorm, 4d MLP, tied head), tune it on the same number of GPUs, and compare the
tensor-parallel size (which Megatron keeps inside a node) and the pipeline/data split. Prints a
table and writes bench/out/megatron_table1.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name, heads, hidden, layers, GPUs, batch, Megatron's (tp, pp)
ROWS = [
    ("1.7B", 24, 2304, 24, 32, 512, (1, 1)),
    ("3.6B", 32, 3072, 30, 64, 512, (2, 1)),
    ("7.5B", 32, 4096, 36, 128, 512, (4, 1)),
    ("18.4B", 48, 6144, 40, 256, 1024, (8, 1)),
]

SPEC = """use std.gpt
use std.hw

hardware cluster = std.hw.a100_node(nodes = {nodes})

model gpt(vocab = 51200, d = {hidden}, heads = {heads}, layers = {layers}, seq = 2048) {{
  input tokens:  i64[batch, seq]
  input targets: i64[batch, seq]
  x, wte = embed(tokens, vocab, d)
  for i in 0..layers {{
    x = block(x, heads)
  }}
  loss = lm_loss(x, wte, targets)
  output loss
}}

train {{
  batch {batch}; microbatches 1; steps 1
  optimizer adamw(lr = 1e-4)
  precision bf16
}}

parallel on cluster {{
  auto
}}
"""


def main() -> None:
    from parc.compiler.tune import tune
    from parc.dsl.check import check_text

    results = []
    print(f"{'model':>6} {'GPUs':>5} {'Megatron tp,pp':>15} {'parc tp,pp,dp':>15} "
          f"{'parc plan':<52} {'s':>6}")
    for name, heads, hidden, layers, gpus, batch, (tp, pp) in ROWS:
        text = SPEC.format(nodes=gpus // 8, hidden=hidden, heads=heads, layers=layers,
                           batch=batch)
        spec = check_text(text, f"gpt_{name}.par")
        start = time.perf_counter()
        result = tune(spec, top=3)
        seconds = time.perf_counter() - start
        best = result.ranked[0].candidate if result.ranked else None
        row = {"model": name, "gpus": gpus, "megatron_tp": tp, "megatron_pp": pp,
               "megatron_dp": gpus // (tp * pp), "seconds": seconds,
               "considered": result.considered}
        if best is not None:
            row.update(parc_tp=best.tp, parc_pp=best.pp, parc_dp=best.dp, plan=best.label(),
                       predicted_step_s=result.ranked[0].step_s,
                       same_tp=best.tp == tp, same_shape=(best.tp, best.pp) == (tp, pp))
            picked = f"{best.tp},{best.pp},{best.dp}"
        else:
            picked, row["plan"] = "none fits", ""
        results.append(row)
        print(f"{name:>6} {gpus:>5} {f'{tp},{pp}':>15} {picked:>15} {row['plan']:<52} "
              f"{seconds:>6.1f}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "megatron_table1.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
