"""SkipPipe's headline in the simulator: the step time of a skip schedule against the full
pipeline, over skip ratios, on uniform and heterogeneous networks.

    python bench/skip_paths.py [--pp 8] [--layers 32] [--microbatches 32] [--quick]

Every row is a plan parc compiles (`make_plan`: partition, schedule, simulation under the
runtime's posting order) of a GPT on `pp` single-GPU nodes (8, or a list: `--pp 4,8,16`),
one pipeline stage each: the full pipeline
(1F1B, every stage for every microbatch), skip with greedy paths (`paths = greedy`: the
least skipped stages) and skip with the path search (`paths = search`, the default). The
networks: `uniform` (one 100 Gb/s fabric), `two regions` (the nodes alternate between two
sites joined by a 1 Gb/s, 20 ms link, the placement a shared cloud hands out) and `four
regions` (sites joined by links of 0.5-4 Gb/s). Prints a table; writes
bench/out/skip_paths.json. Figures are ratios to the full pipeline of the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parc.compiler.plan import make_plan  # noqa: E402
from parc.dsl.check import check_text  # noqa: E402

NETWORKS = {
    "uniform": lambda pp: "",
    "two regions": lambda pp: f"""  regions {[r % 2 for r in range(pp)]}
  region_bw 125 MB/s
  region_latency 20 ms
""",
    "four regions": lambda pp: f"""  regions {[r % 4 for r in range(pp)]}
  region_bw 500 MB/s, 250 MB/s, 125 MB/s, 500 MB/s, 250 MB/s, 62.5 MB/s
  region_latency 10 ms, 20 ms, 40 ms, 10 ms, 20 ms, 40 ms
""",
}


def spec_text(network: str, schedule: str, layers: int, microbatches: int,
              pp: int = 8) -> str:
    return f"""use std.gpt

hardware nodes {{
  device cuda
  devices {pp}
  devices_per_node 1
  memory 80 GB
  flops_bf16 312 TFLOPS
  flops_f32 19.5 TFLOPS
  mem_bw 2.04 TB/s
  intra_bw 300 GB/s
  intra_latency 3 us
  inter_bw 12.5 GB/s
  inter_latency 10 us
  efficiency 0.5
  op_overhead 5 us
{NETWORKS[network](pp)}}}

model gpt(vocab = 32000, d = 2048, heads = 16, layers = {layers}, seq = 1024) {{
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
  batch {2 * microbatches}; microbatches {microbatches}; steps 1
  precision bf16
  optimizer adamw(lr = 3e-4)
  data synthetic(seed = 0)
}}

parallel on nodes {{
  mesh (pp = {pp})
  stages auto
  schedule {schedule}
}}
"""


def predicted(network: str, schedule: str, layers: int, microbatches: int,
              pp: int = 8) -> tuple[float, float]:
    """(predicted step seconds, compile seconds) of one plan."""
    began = time.perf_counter()
    plan = make_plan(check_text(spec_text(network, schedule, layers, microbatches, pp),
                                "bench.par"))
    return plan.predicted_step_s, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pp", default="8", help="pipeline stages (nodes), e.g. 4,8,16")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--microbatches", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="ratios 0.25 and 0.5 only")
    args = parser.parse_args()
    ratios = (0.25, 0.5) if args.quick else (0.1, 0.2, 0.3, 0.4, 0.5)
    rows = []
    print(f"{'pp':>3} {'network':<13} {'ratio':>5} {'full s':>8} {'greedy':>7} {'search':>7} "
          f"{'compile s':>9}")
    for pp in (int(x) for x in args.pp.split(",")):
        for network in NETWORKS:
            full, _ = predicted(network, "1f1b", args.layers, args.microbatches, pp)
            for ratio in ratios:
                greedy, _ = predicted(network, f"skip(ratio = {ratio}, paths = greedy)",
                                      args.layers, args.microbatches, pp)
                search, took = predicted(network, f"skip(ratio = {ratio})", args.layers,
                                         args.microbatches, pp)
                rows.append({"pp": pp, "network": network, "ratio": ratio, "full_s": full,
                             "greedy_s": greedy, "search_s": search,
                             "greedy_vs_full": greedy / full,
                             "search_vs_full": search / full, "search_compile_s": took})
                print(f"{pp:>3} {network:<13} {ratio:>5.2f} {full:>8.3f} {greedy / full:>7.2f} "
                      f"{search / full:>7.2f} {took:>9.1f}", flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "skip_paths.json").write_text(json.dumps(
        {"layers": args.layers, "microbatches": args.microbatches, "rows": rows}, indent=1))
    print("greedy and search: step time as a share of the full pipeline's in the same run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
