"""Attention written out as Megatron-LM did (scores, causal softmax, values) trains exactly as
the fused causal_attention op, and the plan charges it the seq x seq scores it keeps."""

import re
from pathlib import Path

import pytest

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.runtime.shards import assemble
from parc.runtime.train import reference_steps

ROOT = Path(__file__).resolve().parents[2]

UNFUSED = """
def unfused_attention(x: [b, s, d], heads) {
  q = split_heads(linear(x, d) as q, heads)
  k = split_heads(linear(x, d) as k, heads)
  v = split_heads(linear(x, d) as v, heads)
  p = softmax(matmul(q, transpose(k)) * 0.25, causal = true)
  return linear(merge_heads(matmul(p, v)), d) as proj
}

def unfused_block(x: [b, s, d], heads) {
  x = x + unfused_attention(layernorm(x) as ln1, heads) as attn
  return x + mlp(layernorm(x) as ln2, 4 * d)
}
"""


def spec_text(unfused: bool) -> str:
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 1)")
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  mesh (pp = 1)\n}", text,
                  flags=re.S)
    if unfused:
        text = text.replace("use std.gpt\n", "use std.gpt\nuse std.nn\n" + UNFUSED)
        text = text.replace("x = block(x, heads)", "x = unfused_block(x, heads) as block")
    return text


def test_unfused_attention_matches_the_fused_op(tmp_path):
    assert "d = 32, heads = 2" in spec_text(False)  # head_dim 16: the 0.25 scale above
    results = {}
    for unfused in (False, True):
        plan = make_plan(check_text(spec_text(unfused), "a.par"))
        out = tmp_path / str(unfused)
        program = write_program(plan, out / "program", "a.par")
        losses = reference_steps(program, steps=1, dump=str(out / "dump"))
        results[unfused] = (losses[0], assemble(out / "dump", "grads")[1], plan)
    (loss, grads, fused_plan), (loss_u, grads_u, unfused_plan) = results[False], results[True]
    assert loss_u == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == grads_u.keys()
    for name in grads:
        assert (grads_u[name] - grads[name]).abs().max() < 1e-5, name
    # batch 16 / 4 microbatches x 2 heads x 16 x 16 scores, f32: scores, scaled, probabilities
    scores = 4 * 2 * 16 * 16 * 4
    extra = unfused_plan.stages[0].act_bytes - fused_plan.stages[0].act_bytes
    assert extra >= 3 * scores * 4  # four blocks
