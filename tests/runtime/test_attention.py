"""Attention written out as Megatron-LM did (scores, causal softmax, values) trains exactly as
the fused causal_attention op, and the plan charges each what its backward keeps: the
unfused one the seq x seq probabilities."""

import re
from pathlib import Path

import pytest
import torch

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
    text = text.replace("seq = 16", "seq = 64")  # scores of 64 x 64 per head, outputs 64 x 16
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  mesh (pp = 1)\n}", text,
                  flags=re.S)
    if unfused:
        text = text.replace("use std.gpt\n", "use std.gpt\nuse std.nn\n" + UNFUSED)
        text = text.replace("x = block(x, heads)", "x = unfused_block(x, heads) as block")
    return text


def saved_per_microbatch(program: Path, dump: Path, microbatches: int) -> tuple[float, float]:
    """The step's first loss, and the bytes of distinct tensors autograd saves for one
    microbatch, not counting the parameters (every saved tensor is held to the end, so no
    storage is reused and counted twice)."""
    storages: dict[int, int] = {}
    held = []

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        held.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = reference_steps(program, steps=1, dump=str(dump))
    params = {p.untyped_storage().data_ptr() for p in held if isinstance(p, torch.nn.Parameter)}
    _, grads = assemble(dump, "grads")
    param_bytes = sum(g.numel() * 4 for g in grads.values())
    assert params  # the weights are saved as themselves (their views)
    return losses[0], (sum(storages.values()) - param_bytes) / microbatches


def test_unfused_attention_matches_the_fused_op(tmp_path):
    assert "d = 32, heads = 2" in spec_text(False)  # head_dim 16: the 0.25 scale above
    results = {}
    for unfused in (False, True):
        plan = make_plan(check_text(spec_text(unfused), "a.par"))
        out = tmp_path / str(unfused)
        program = write_program(plan, out / "program", "a.par")
        loss, saved = saved_per_microbatch(program, out / "dump", 4)
        results[unfused] = (loss, assemble(out / "dump", "grads")[1], plan, saved)
    (loss, grads, fused_plan, fused_saved), (loss_u, grads_u, unfused_plan, unfused_saved) = \
        results[False], results[True]
    assert loss_u == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == grads_u.keys()
    for name in grads:
        assert (grads_u[name] - grads[name]).abs().max() < 1e-5, name
    # what the plan charges per microbatch is what autograd keeps
    for plan, saved in ((fused_plan, fused_saved), (unfused_plan, unfused_saved)):
        assert plan.stages[0].act_bytes == pytest.approx(saved, rel=0.1)
    # batch 16 / 4 microbatches x 2 heads x 64 x 64 probabilities, f32, and the causal mask,
    # in four blocks; the fused op keeps a log-sum-exp per row instead (and its output, which
    # the unfused one keeps as the merged heads)
    scores, mask, lse = (4 * 2 * 64 * 64 * 4, 64 * 64, 4 * 2 * 64 * 4)
    extra = unfused_plan.stages[0].act_bytes - fused_plan.stages[0].act_bytes
    assert extra == 4 * (scores + mask - lse)
    assert extra == pytest.approx(unfused_saved - fused_saved, rel=0.1)
