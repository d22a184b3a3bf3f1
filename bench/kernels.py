"""parc's Triton kernels against torch eager and torch.compile, on a CUDA GPU.

Shapes are GPT-2 small (d = 768, vocab 50304) and LLaMA-7B (d = 4096, vocab 32000) widths with
8 x 2048 tokens, in bf16: the library kernels, and generated kernels of the fuse pass (bias +
residual + layer norm, residual + RMS norm, bias + GELU, SwiGLU). Each kernel's forward and
backward are timed with triton.testing.do_bench; bandwidth is the bytes a kernel must move
(inputs read, outputs written) over its time, reported against the device's memory
bandwidth. Causal attention (heads of 64 resp. 128, and grouped-query with a quarter of the
key/value heads) is compute-bound: its rows add TFLOP/s, and its eager is torch's SDPA (flash
attention on the GPU), so "fwd+bwd parc/eager" is the kernel against SDPA. Prints a table and
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
HEAD_DIMS = {"gpt2_small": 64, "llama_7b": 128}
# generated kernels of the fuse pass, found by their chain of ops in the tiny examples (the
# kernels take the row width at run time, so the tiny model's kernels serve any width)
GENERATED = {("add", "add", "layer_norm"): ("gpt_tiny", "bias_residual_layer_norm"),
             ("add", "gelu"): ("gpt_tiny", "bias_gelu"),
             ("add", "rms_norm"): ("llama_tiny", "residual_rms_norm"),
             ("silu", "mul"): ("llama_tiny", "swiglu")}


def generated_kernels(where: Path) -> dict:
    """name -> the generated kernel function, from programs compiled with `--kernels triton`."""
    from parc.compiler.codegen.emit import Emitter
    from parc.compiler.codegen.program import write_program
    from parc.compiler.plan import make_plan
    from parc.dsl.check import check_file
    from parc.runtime.programs import sibling

    found = {}
    for example in sorted({e for e, _ in GENERATED.values()}):
        plan = make_plan(check_file(ROOT / "examples" / f"{example}.par"))
        emitter = Emitter(plan, "triton")
        emitter.stages()
        directory = write_program(plan, where / example, example, "triton")
        module = sibling(str(directory / "main.py"), "kernels")
        for kernel in emitter.fused:
            chain = tuple(op.kind for op in kernel.ops)
            if chain in GENERATED and GENERATED[chain][0] == example:
                found.setdefault(GENERATED[chain][1], getattr(module, kernel.name))
    return found


def cases(d: int, vocab: int, dtype, generated: dict, device: str = "cuda",
          tokens: int = TOKENS, seq: int = 2048, head_dim: int = 64) -> dict:
    """name -> (parc's function, torch's, differentiable inputs, bytes it must move)."""
    from parc.runtime.functional import causal_attention as sdpa
    from parc.runtime.functional import rope as rope_torch
    from parc.stdlib.kernels import causal_attention, cross_entropy, layer_norm, rms_norm, rope

    def rand(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    x, r, w, b, bias = rand(tokens, d), rand(tokens, d), rand(d), rand(d), rand(d)
    wide, gate = rand(tokens, 4 * d), rand(tokens, 4 * d)
    q = rand(tokens // seq, d // 64, seq, 64)
    heads = d // head_dim
    aq, ak, av = (rand(tokens // seq, heads, seq, head_dim) for _ in range(3))
    gk, gv = (rand(tokens // seq, heads // 4, seq, head_dim) for _ in range(2))
    qkv = aq.numel() * aq.element_size()
    rows = min(tokens, 2048)  # cross-entropy over the whole vocabulary for 2048 tokens
    logits = rand(rows, vocab)
    targets = torch.randint(0, vocab, (rows,), device=device)
    size = x.numel() * x.element_size()

    def residual_ln():
        h = x + (r + bias)
        return h, F.layer_norm(h, (d,), w, b)

    def residual_rms():
        h = x + r
        return h, F.rms_norm(h, (d,), w)

    g = generated
    return {
        "layer_norm": (lambda: layer_norm(x, w, b), lambda: F.layer_norm(x, (d,), w, b),
                       (x, w, b), 2 * size),
        "rms_norm": (lambda: rms_norm(x, w), lambda: F.rms_norm(x, (d,), w), (x, w), 2 * size),
        "rope": (lambda: rope(q), lambda: rope_torch(q), (q,),
                 2 * q.numel() * q.element_size()),
        "cross_entropy": (lambda: cross_entropy(logits, targets),
                          lambda: F.cross_entropy(logits.float(), targets), (logits,),
                          logits.numel() * logits.element_size()),
        # generated: read the two summands, write the sum (the residual stream) and its norm
        "bias_residual_ln": (lambda: g["bias_residual_layer_norm"](r, bias, x, w, b),
                             residual_ln, (x, r, bias, w, b), 4 * size),
        "residual_rms": (lambda: g["residual_rms_norm"](x, r, w), residual_rms, (x, r, w),
                         4 * size),
        "bias_gelu": (lambda: g["bias_gelu"](wide, bias.repeat(4)),
                      lambda: F.gelu(wide + bias.repeat(4), approximate="tanh"),
                      (wide, bias), 2 * wide.numel() * wide.element_size()),
        "swiglu": (lambda: g["swiglu"](wide, gate), lambda: F.silu(wide) * gate, (wide, gate),
                   3 * wide.numel() * wide.element_size()),
        # read q, k, v and write the output (the scores never reach memory)
        "attention": (lambda: causal_attention(aq, ak, av), lambda: sdpa(aq, ak, av),
                      (aq, ak, av), 4 * qkv),
        "attention_gqa": (lambda: causal_attention(aq, gk, gv), lambda: sdpa(aq, gk, gv),
                          (aq, gk, gv), 2 * qkv + qkv // 2),
    }


def attention_flops(q: torch.Tensor) -> float:
    """Causal attention's forward FLOPs: QK^T and PV over the lower half of the scores."""
    batch, heads, seq, head_dim = q.shape
    return 2.0 * batch * heads * seq * seq * head_dim


def bench(fn, inputs) -> tuple[float, float]:
    """(forward ms, forward+backward ms)."""
    from triton.testing import do_bench

    fwd = do_bench(fn)
    return fwd, do_bench(lambda: backward(fn, inputs))


def backward(fn, inputs) -> tuple:
    """Run `fn` and its backward into `inputs` (ones as the gradient of every output)."""
    out = fn()
    outs = list(out) if isinstance(out, tuple) else [out]
    return torch.autograd.grad(outs, inputs, [torch.ones_like(o) for o in outs])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mem-bw", type=float, default=3.35e12,
                        help="the device's memory bandwidth in bytes/s (H100 SXM: 3.35e12)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/kernels.py needs a CUDA GPU (the interpreter's timings mean nothing)")
        sys.exit(1)
    import tempfile

    generated = generated_kernels(Path(tempfile.mkdtemp()))
    rows = []
    print(f"{'model':<11} {'kernel':<14} {'parc ms':>8} {'eager ms':>9} {'compile ms':>11} "
          f"{'parc GB/s':>10} {'of peak':>8} {'fwd+bwd parc/compile':>21} "
          f"{'fwd+bwd parc/eager':>19} {'TFLOP/s':>8}")
    for model, (d, vocab) in WIDTHS.items():
        for name, (ours, eager, inputs, moved) in cases(d, vocab, torch.bfloat16, generated,
                                                        head_dim=HEAD_DIMS[model]).items():
            compiled = torch.compile(eager)
            p_fwd, p_both = bench(ours, inputs)
            e_fwd, e_both = bench(eager, inputs)
            c_fwd, c_both = bench(compiled, inputs)
            gbs = moved / (p_fwd / 1e3) / 1e9
            row = {"model": model, "kernel": name, "parc_ms": p_fwd, "eager_ms": e_fwd,
                   "compile_ms": c_fwd, "parc_gbs": gbs, "fraction_of_peak": gbs * 1e9 /
                   args.mem_bw, "fwd_bwd_ratio_vs_compile": p_both / c_both,
                   "fwd_bwd_ratio_vs_eager": p_both / e_both}
            if name.startswith("attention"):
                row["parc_tflops"] = attention_flops(inputs[0]) / (p_fwd / 1e3) / 1e12
            rows.append(row)
            print(f"{model:<11} {name:<14} {p_fwd:>8.3f} {e_fwd:>9.3f} {c_fwd:>11.3f} "
                  f"{gbs:>10.0f} {row['fraction_of_peak']:>8.0%} "
                  f"{row['fwd_bwd_ratio_vs_compile']:>21.2f} "
                  f"{row['fwd_bwd_ratio_vs_eager']:>19.2f} "
                  + (f"{row['parc_tflops']:>8.0f}" if "parc_tflops" in row else f"{'':>8}"))
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "kernels.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
