"""parc's Triton kernels against torch eager and torch.compile, on a CUDA GPU.

Shapes are GPT-2 small (d = 768, vocab 50304) and LLaMA-7B (d = 4096, vocab 32000) widths with
8 x 2048 tokens, in bf16. Each kernel's forward and backward are timed with
triton.testing.do_bench; bandwidth is the bytes a kernel must move (inputs read, outputs
written) over its time, reported against the device's memory bandwidth. Prints a table and
writes bench/out/kernels.json. Needs a GPU: without one it says so and exits 1.

    python bench/kernels.py [--mem-bw 3.35e12]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKENS = 8 * 2048
WIDTHS = {"gpt2_small": (768, 50304), "llama_7b": (4096, 32000)}


def cases(d: int, vocab: int, dtype) -> dict:
    from parc.runtime.functional import rope as rope_torch
    from parc.stdlib.kernels import cross_entropy, layer_norm, rms_norm, rope

    dev = "cuda"
    x = torch.randn(TOKENS, d, device=dev, dtype=dtype, requires_grad=True)
    w = torch.randn(d, device=dev, dtype=dtype, requires_grad=True)
    b = torch.randn(d, device=dev, dtype=dtype, requires_grad=True)
    heads = d // 64
    q = torch.randn(8, heads, 2048, 64, device=dev, dtype=dtype, requires_grad=True)
    rows = 2048  # cross-entropy over the whole vocabulary for 2048 tokens
    logits = torch.randn(rows, vocab, device=dev, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, vocab, (rows,), device=dev)
    size = x.numel() * x.element_size()
    return {
        "layer_norm": (lambda: layer_norm(x, w, b), lambda: F.layer_norm(x, (d,), w, b),
                       (x, w, b), 2 * size),
        "rms_norm": (lambda: rms_norm(x, w), lambda: F.rms_norm(x, (d,), w), (x, w), 2 * size),
        "rope": (lambda: rope(q), lambda: rope_torch(q), (q,),
                 2 * q.numel() * q.element_size()),
        "cross_entropy": (lambda: cross_entropy(logits, targets),
                          lambda: F.cross_entropy(logits.float(), targets), (logits,),
                          logits.numel() * logits.element_size()),
    }


def bench(fn, inputs) -> tuple[float, float]:
    """(forward ms, forward+backward ms)."""
    from triton.testing import do_bench

    fwd = do_bench(fn)

    def both():
        out = fn()
        grads = torch.ones_like(out) if out.dim() else None
        torch.autograd.grad(out, inputs, grads)
    return fwd, do_bench(both)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mem-bw", type=float, default=3.35e12,
                        help="the device's memory bandwidth in bytes/s (H100 SXM: 3.35e12)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/kernels.py needs a CUDA GPU (the interpreter's timings mean nothing)")
        sys.exit(1)
    rows = []
    print(f"{'model':<11} {'kernel':<14} {'parc ms':>8} {'eager ms':>9} {'compile ms':>11} "
          f"{'parc GB/s':>10} {'of peak':>8} {'fwd+bwd parc/compile':>21}")
    for model, (d, vocab) in WIDTHS.items():
        for name, (ours, eager, inputs, moved) in cases(d, vocab, torch.bfloat16).items():
            compiled = torch.compile(eager)
            p_fwd, p_both = bench(ours, inputs)
            e_fwd, _ = bench(eager, inputs)
            c_fwd, c_both = bench(compiled, inputs)
            gbs = moved / (p_fwd / 1e3) / 1e9
            row = {"model": model, "kernel": name, "parc_ms": p_fwd, "eager_ms": e_fwd,
                   "compile_ms": c_fwd, "parc_gbs": gbs, "fraction_of_peak": gbs * 1e9 /
                   args.mem_bw, "fwd_bwd_ratio_vs_compile": p_both / c_both}
            rows.append(row)
            print(f"{model:<11} {name:<14} {p_fwd:>8.3f} {e_fwd:>9.3f} {c_fwd:>11.3f} "
                  f"{gbs:>10.0f} {row['fraction_of_peak']:>8.0%} "
                  f"{row['fwd_bwd_ratio_vs_compile']:>21.2f}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
