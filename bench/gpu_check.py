"""The first thing to run on a machine with a CUDA GPU: a few minutes, one table, one JSON.

1. The contract through NCCL on one GPU (world size 1): a GPT and a LLaMA plan compiled with
   the Triton kernels, trained two steps under torchrun on the GPU, against the
   single-process reference on the CPU (loss, every gradient, every updated parameter).
   With more than one GPU, a pp x dp plan over every GPU too (NCCL point-to-point in the
   compiled posting order).
2. The kernel bench (bench/kernels.py): library and generated Triton kernels against torch
   eager and torch.compile.
3. The causal attention kernel against SDPA at LLM sizes (bf16, MHA and grouped-query, a
   ragged seq): forward and gradients within twice SDPA's own bf16 error of an f32
   reference, and fwd+bwd timed against SDPA (bench/out/gpu_attention.json).
4. `parc calibrate` on every GPU: each figure it measures against the H200 data sheet as a
   ratio (bench/out/gpu_calibrate.json).

Without CUDA it says so and exits 0, so it is safe anywhere; it never runs in CI.

    python bench/gpu_check.py [--skip-kernels]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPU_HW = """hardware gpu {
  device cuda
  devices DEVICES
  memory 80 GB
  flops_f32 67 TFLOPS
  flops_bf16 989 TFLOPS
  mem_bw 3.35 TB/s
  intra_bw 450 GB/s
  intra_latency 3 us
}
"""


def plan_text(example: str, devices: int, mesh: str, sbp: str = "") -> str:
    text = (ROOT / "examples" / example).read_text()
    text = re.sub(r"hardware \w+ = .*\n", GPU_HW.replace("DEVICES", str(devices)), text)
    block = f"parallel on gpu {{\n  mesh ({mesh})\n" + (
        f"  sbp {{\n{sbp}\n  }}\n" if sbp else "") + "  stages auto\n  schedule 1f1b\n}"
    return re.sub(r"parallel on \w+ \{.*?\n\}", block, text, flags=re.S)


def contract(where: Path, gpus: int) -> list[dict]:
    from tests.contract.harness import compare, compile_pair

    plans = {"gpt_1gpu": plan_text("gpt_tiny.par", 1, "pp = 1"),
             "llama_1gpu": plan_text("llama_tiny.par", 1, "pp = 1")}
    if gpus >= 2 and gpus % 2 == 0:
        mesh = "pp = 2" + (f", dp = {gpus // 2}" if gpus > 2 else "")
        plans[f"gpt_{gpus}gpu"] = plan_text("gpt_tiny.par", gpus, mesh,
                                            "    tokens, targets: S(0)@dp" if gpus > 2 else "")
    rows = []
    for name, text in plans.items():
        devices = int(re.search(r"devices (\d+)", text).group(1))
        started = time.perf_counter()
        row = {"check": f"contract {name}", "devices": devices}
        try:
            dist_dir, ref_dir = compile_pair(text, name, where, kernels="triton")
            run = subprocess.run(
                [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={devices}", "--max-restarts=0",
                 str(ROOT / "tests" / "contract" / "driver.py"), "2", str(dist_dir),
                 str(where / name / "dump")], capture_output=True, text=True, timeout=900,
                env={**os.environ, "TRITON_INTERPRET": "0"})
            if run.returncode != 0:
                raise RuntimeError(run.stderr[-2000:])
            try:  # the reference runs on this machine's CPU, in torch
                losses = compare(where / name / "dump", ref_dir, where / name / "refdump",
                                 steps=2)
                tolerance = "fp32 rounding"
            except AssertionError:
                losses = compare(where / name / "dump", ref_dir, where / name / "refdump",
                                 steps=2, precision="bf16")
                tolerance = "bf16's tolerance only"
            row.update(ok=True, detail=f"losses {losses[0]:.4f} -> {losses[1]:.4f}, within "
                       f"{tolerance}")
        except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
            row.update(ok=False, detail=str(exc).strip().splitlines()[-1][:200])
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
    return rows


ATTENTION = {"attn gpt2 h12 d64": (8, 12, 12, 2048, 64),
             "attn llama3 gqa d128": (2, 32, 8, 4096, 128),
             "attn ragged s1000 d128": (4, 16, 4, 1000, 128)}  # (batch, heads, kv, seq, dim)


def attention_case(batch: int, heads: int, kv_heads: int, seq: int, dim: int) -> dict:
    """Largest error over largest value of the kernel's output and gradients against SDPA in
    f32 on the same bf16 inputs, SDPA's own in bf16, and both timed forward + backward."""
    import torch
    from triton.testing import do_bench

    from parc.runtime.functional import causal_attention as sdpa
    from parc.stdlib.kernels import causal_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, h, seq, dim, device="cuda", dtype=torch.bfloat16,
                           requires_grad=True) for h in (heads, kv_heads, kv_heads))
    g = torch.randn_like(q)

    def run(fn, q, k, v, g):
        o = fn(q, k, v)
        return (o, *torch.autograd.grad(o, (q, k, v), g))

    want = run(sdpa, *(t.detach().float().requires_grad_() for t in (q, k, v)), g.float())
    mine, theirs = (max(((a.float() - w).abs().max() / w.abs().max()).item()
                        for a, w in zip(run(fn, q, k, v, g), want))
                    for fn in (causal_attention, sdpa))
    ms = do_bench(lambda: run(causal_attention, q, k, v, g))
    sdpa_ms = do_bench(lambda: run(sdpa, q, k, v, g))
    return dict(ok=mine <= 2 * theirs + 1e-3, error=mine, sdpa_error=theirs, ms=ms,
                sdpa_ms=sdpa_ms)


def attention(out: Path) -> None:
    """The attention kernel on the GPU (attention_case per shape): a table and
    gpu_attention.json."""
    rows = []
    print(f"{'attention':<24} {'ok':>4} {'error':>8} {'SDPA bf16':>10} {'ms':>7} "
          f"{'SDPA ms':>8} {'ratio':>6}")
    for name, shape in ATTENTION.items():
        row = {"check": name, "shape": list(shape)}
        try:
            row.update(attention_case(*shape))
            print(f"{name:<24} {'yes' if row['ok'] else 'NO':>4} {row['error']:>8.1e} "
                  f"{row['sdpa_error']:>10.1e} {row['ms']:>7.2f} {row['sdpa_ms']:>8.2f} "
                  f"{row['ms'] / row['sdpa_ms']:>6.2f}")
        except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
            row.update(ok=False, detail=str(exc).strip().splitlines()[-1][:200])
            print(f"{name:<24} {'NO':>4}  {row['detail']}")
        rows.append(row)
    (out / "gpu_attention.json").write_text(json.dumps(rows, indent=1))


def calibrate_on_cuda(gpus: int) -> list[dict] | None:
    """`parc calibrate` on every GPU here: each figure it measures next to the H200 data
    sheet's (std.hw.h200_node; its latencies and kernel launch are typical figures, not the
    sheet's) as measured / data sheet. Prints a table, writes bench/out/gpu_calibrate.json
    (the rows and the hardware block); None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        print("calibrate: no CUDA device here; skipped")
        return None
    from parc.dsl.check import check_text
    from parc.runtime.calibrate import run_job
    from parc.runtime.hardware_figures import hardware_block

    sheet = check_text("use std.hw\nhardware h = std.hw.h200_node()\n", "h200.par").hardware["h"]
    started = time.perf_counter()
    try:
        figures = run_job(gpus)
    except RuntimeError as exc:
        print(f"calibrate: failed: {str(exc).strip()[-500:]}")
        return None
    pairs = [("flops_bf16", "flops_bf16"), ("flops_f32", "flops_f32"), ("mem_bw", "mem_bw"),
             ("memory", "memory"), ("op_overhead", "op_overhead"),
             ("launch_overhead", "op_overhead")]
    if figures.devices > 1:  # one GPU measures no link; one node none across nodes (None)
        pairs += [(f"{where}{how}_{what}", f"{where}_{what}") for where in ("intra", "inter")
                  for how in ("", "_p2p") for what in ("bw", "latency")]
    rows = [{"figure": mine, "measured": getattr(figures, mine), "sheet_figure": theirs,
             "datasheet": getattr(sheet, theirs),
             "ratio": getattr(figures, mine) / getattr(sheet, theirs)}
            for mine, theirs in pairs if getattr(figures, mine) is not None]
    print(f"calibrate on {figures.devices} x {figures.device_name} "
          f"({time.perf_counter() - started:.0f} s), against the H200 data sheet:")
    print(f"{'figure':<18} {'measured':>11} {'data sheet':>11} {'ratio':>6}")
    for row in rows:
        print(f"{row['figure']:<18} {row['measured']:>11.4g} {row['datasheet']:>11.4g} "
              f"{row['ratio']:>6.2f}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_calibrate.json").write_text(json.dumps(
        {"device": figures.device_name, "devices": figures.devices, "rows": rows,
         "block": hardware_block("calibrated", figures)}, indent=1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-kernels", action="store_true")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (run it on a GPU machine)")
        return
    gpus = torch.cuda.device_count()
    print(f"gpu_check: {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    where = Path(tempfile.mkdtemp(prefix="parc_gpu_check_"))
    rows = contract(where, gpus)
    print(f"{'check':<28} {'devices':>7} {'ok':>4} {'s':>6}  detail")
    for row in rows:
        print(f"{row['check']:<28} {row['devices']:>7} {'yes' if row['ok'] else 'NO':>4} "
              f"{row['seconds']:>6}  {row['detail']}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps({"gpus": gpus, "device":
                                                    torch.cuda.get_device_name(0),
                                                    "contract": rows}, indent=1))
    attention(out)
    calibrate_on_cuda(gpus)
    if not args.skip_kernels:
        subprocess.run([sys.executable, str(ROOT / "bench" / "kernels.py")], check=False,
                       env={**os.environ, "TRITON_INTERPRET": "0"})


if __name__ == "__main__":
    main()
