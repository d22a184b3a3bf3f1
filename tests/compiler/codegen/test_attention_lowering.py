"""Which attention generated code calls: the Triton kernel (parc.stdlib.kernels) where the
plan's hardware is a CUDA device and the Triton kernels are in use, torch's SDPA otherwise;
and a program calling the kernel trains a step as the SDPA one does."""

import re
from pathlib import Path

import pytest

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.runtime.shards import assemble
from parc.runtime.train import reference_steps

ROOT = Path(__file__).resolve().parents[3]
GPU = """hardware gpu {
  device cuda
  devices 1
  memory 80 GB
  flops_f32 67 TFLOPS
  flops_bf16 989 TFLOPS
  mem_bw 3.35 TB/s
  intra_bw 450 GB/s
  intra_latency 3 us
}
"""


def spec_text(device: str, kernels: str | None) -> str:
    """The tiny LLaMA (grouped-query attention, head_dim 8) on one device, two layers."""
    text = (ROOT / "examples/llama_tiny.par").read_text()
    text = text.replace("layers = 4", "layers = 2").replace("batch 16; microbatches 4",
                                                              "batch 4; microbatches 2")
    hardware = GPU if device == "cuda" else "hardware gpu = std.hw.cpu(devices = 1)\n"
    text = re.sub(r"hardware cpu4 = .*\n", hardware, text)
    setting = f"  kernels {kernels}\n" if kernels else ""
    return re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on gpu {\n  mesh (pp = 1)\n"
                  + setting + "}", text, flags=re.S)


def program(where: Path, device: str, kernels: str | None) -> Path:
    plan = make_plan(check_text(spec_text(device, kernels), "a.par"))
    return write_program(plan, where / "program", "a.par")


def stage_text(directory: Path) -> str:
    return "".join(p.read_text() for p in sorted(directory.glob("stage_*.py")))


@pytest.mark.parametrize("device, kernels, kernel", [
    ("cuda", None, True),  # a CUDA plan runs the Triton kernels unless told otherwise
    ("cuda", "triton", True),
    ("cuda", "torch", False),
    ("cpu", "triton", False),  # the other Triton kernels, not attention (interpreted)
    ("cpu", None, False),
])
def test_the_kernel_only_on_cuda_with_the_triton_kernels(tmp_path, device, kernels, kernel):
    stages = stage_text(program(tmp_path, device, kernels))
    # each call's attention is one line of its class (calls of one class share it)
    assert (stages.count("K.causal_attention(") > 0) == kernel
    assert (len(re.findall(r"(?<![\w.])causal_attention\(", stages)) > 0) == (not kernel)
    if kernels == "triton":
        assert "K.rms_norm(" in stages or "kernels.fused_" in stages


def test_a_step_with_the_kernel_matches_sdpa(tmp_path):
    """One step of the CUDA plan's program on this CPU (its kernels interpreted) against the
    CPU plan's, both with the Triton kernels: only attention differs."""
    results = {}
    for device in ("cuda", "cpu"):
        directory = program(tmp_path / device, device, "triton")
        assert ("K.causal_attention(" in stage_text(directory)) == (device == "cuda")
        losses = reference_steps(directory, steps=1, dump=str(tmp_path / device / "dump"))
        results[device] = losses[0], assemble(tmp_path / device / "dump", "grads")[1]
    (loss, grads), (loss_sdpa, grads_sdpa) = results["cuda"], results["cpu"]
    assert loss == pytest.approx(loss_sdpa, rel=1e-6)
    assert grads.keys() == grads_sdpa.keys() and any("attn" in name for name in grads)
    for name in grads:
        assert (grads[name] - grads_sdpa[name]).abs().max() < 1e-5, name
