"""`precision bf16`: bf16 compute with f32 master weights; close to f32, and predicted faster."""

import re
from pathlib import Path

import torch

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.runtime.shards import assemble
from parc.runtime.train import Program, reference_steps

ROOT = Path(__file__).resolve().parents[2]


def spec_text(precision: str) -> str:
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("steps 20", f"steps 20\n  precision {precision}")
    text = text.replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 1)")
    return re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  mesh (pp = 1)\n}", text,
                  flags=re.S)


def test_bf16_trains_close_to_f32_with_f32_master_weights(tmp_path):
    results = {}
    for precision in ("f32", "bf16"):
        program = write_program(make_plan(check_text(spec_text(precision), "p.par")),
                                tmp_path / precision, "p.par")
        losses = reference_steps(program, steps=1, dump=str(tmp_path / f"d_{precision}"))
        results[precision] = (losses[0], assemble(tmp_path / f"d_{precision}", "grads")[1])
        params = Program(program, None).parameters()
        assert all(p.dtype == torch.float32 for p in params)
    (f32_loss, f32_grads), (bf16_loss, bf16_grads) = results["f32"], results["bf16"]
    assert bf16_loss != f32_loss  # bf16 really ran
    assert abs(bf16_loss - f32_loss) / f32_loss < 0.01
    for name, grad in f32_grads.items():
        assert bf16_grads[name].dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(grad.flatten(), bf16_grads[name].flatten(),
                                                    dim=0)
        assert cos > 0.95 or grad.abs().max() < 1e-6, name


def test_cost_and_memory_follow_precision():
    text = (ROOT / "examples/gpt2_small.par").read_text()
    f32 = make_plan(check_text(text, "a.par"))
    bf16 = make_plan(check_text(text.replace("steps 100", "steps 100\n  precision bf16"), "b.par"))
    assert bf16.predicted_step_s < f32.predicted_step_s / 4  # 989 vs 67 TFLOPS
    assert max(m.activations for m in bf16.memory) < 0.6 * max(m.activations for m in f32.memory)
    total = [sum(m.params for m in plan.memory) for plan in (f32, bf16)]
    assert total[0] == total[1]  # f32 master weights either way
