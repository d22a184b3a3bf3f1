"""`parc tune`: candidates, pruning, the winner as a block, `parallel { auto }`."""

import re
import time
from pathlib import Path

import pytest

from parc.api import resolve_auto
from parc.cli import main
from parc.compiler.tune import Candidate, candidates, parallel_text, sbp_rules, tune
from parc.dsl.check import check_file, check_text

ROOT = Path(__file__).resolve().parents[2]


def test_candidates_keep_tp_inside_a_node_and_heads_divisible():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    cands = candidates(spec, spec.parallel.hardware, 8)
    assert {c.tp for c in cands} == {1, 2, 4}  # 12 heads: tp = 8 would split a head
    assert all(c.dp * c.pp * c.tp == 8 for c in cands)
    assert all(c.microbatches % c.pp == 0 for c in cands if c.family == "interleaved")


def test_gpt2_small_tunes_fast_and_ranks_by_predicted_time():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    start = time.perf_counter()
    result = tune(spec, top=5)
    assert time.perf_counter() - start < 10
    steps = [s.step_s for s in result.ranked]
    assert steps == sorted(steps) and len(steps) == 5
    assert result.simulated < result.considered  # the bound pruned most plans
    assert all(s.memory_max <= spec.parallel.hardware.memory for s in result.ranked)
    assert result.rejected and all(over > 0 for _, over in result.rejected)


def test_llama_7b_on_64_devices_finishes_in_time():
    text = (ROOT / "examples/llama_tiny.par").read_text()
    text = text.replace("vocab = 64, d = 32, heads = 4, kv_heads = 2, hidden = 64, layers = 4, "
                        "seq = 16", "vocab = 32000, d = 4096, heads = 32, kv_heads = 32, "
                        "hidden = 11008, layers = 32, seq = 2048")
    text = text.replace("hardware cpu4 = std.hw.cpu(devices = 4)",
                        "hardware cpu4 = std.hw.a100_node(nodes = 8)")
    text = text.replace("batch 16; microbatches 4", "batch 512; microbatches 32")
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  auto\n}", text,
                  flags=re.S)
    spec = check_text(text, "llama7b.par")
    start = time.perf_counter()
    result = tune(spec, top=3)
    assert time.perf_counter() - start < 10
    assert result.considered > 1000 and result.ranked


def test_winner_block_checks_and_reproduces_its_prediction():
    spec = check_file(ROOT / "examples/gpt_tp.par")
    c = Candidate(dp=2, pp=1, tp=2, family="1f1b", virtual=1, microbatches=2, recompute=False,
                  zero=False)
    block = parallel_text("cpu4", c, sbp_rules(spec, 2, 2, False))
    assert ("block[*].attn.q.w, block[*].attn.k.w, block[*].attn.v.w, block[*].mlp.fc1.w: "
            "S(1)@tp") in block
    text = re.sub(r"parallel on cpu4 \{.*?\n\}\n", block, (ROOT / "examples/gpt_tp.par")
                  .read_text(), flags=re.S)
    checked = check_text(text, "w.par")
    assert checked.parallel.mesh == (("dp", 2), ("tp", 2))


def test_parallel_auto_and_write(tmp_path, capsys):
    spec_file = tmp_path / "tiny.par"
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    spec_file.write_text(re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  auto\n}",
                                text, flags=re.S))
    spec = check_file(spec_file)
    assert spec.parallel.auto
    chosen = resolve_auto(spec)
    assert not chosen.parallel.auto and chosen.parallel.mesh
    assert main(["tune", str(spec_file), "--top", "3", "--explain", "--write"]) == 0
    out = capsys.readouterr().out
    assert "plans considered" in out and "the winner is" in out
    assert "\n  auto\n" not in spec_file.read_text()
    assert main(["check", "-q", str(spec_file)]) == 0


def test_auto_with_a_mesh_is_an_error():
    text = (ROOT / "examples/gpt_tiny.par").read_text().replace("  mesh (pp = 2, dp = 2)",
                                                               "  auto\n  mesh (pp = 2, dp = 2)")
    with pytest.raises(Exception, match="`auto` chooses the whole plan"):
        check_text(text, "a.par")


def test_without_a_pipeline_microbatches_go_down_to_one_sample():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    counts = {c.microbatches for c in candidates(spec, spec.parallel.hardware, 8)
              if c.pp == 1 and c.dp == 8}
    assert counts == {1, 2, 4, 8, 16, 32, 64}  # 512 samples over dp = 8: 64 per rank


def test_tensor_parallel_plans_split_the_vocabulary():
    gpt = check_file(ROOT / "examples/gpt_tiny.par")
    assert "embed.wte: S(0)@tp" in sbp_rules(gpt, 1, 2, False)  # tied: table rows only
    llama = check_file(ROOT / "examples/llama_tiny.par")
    rules = sbp_rules(llama, 2, 2, True)
    assert "llama_embed.wte: S(0)@tp" in rules
    assert "llama_loss.output.w: S(1)@tp, S(0)@dp" in rules  # untied head: columns, and ZeRO
    odd = check_text((ROOT / "examples/gpt_tiny.par").read_text().replace(
        "vocab = 64", "vocab = 65"), "odd.par")
    assert not any("wte" in r for r in sbp_rules(odd, 1, 2, False))  # 65 rows do not split


def test_pipeline_microbatch_counts_are_every_divisor_from_pp_up():
    text = (ROOT / "examples/gpt2_small.par").read_text().replace(
        "batch 512; microbatches 16", "batch 448; microbatches 16")
    spec = check_text(text, "b448.par")
    counts = {c.microbatches for c in candidates(spec, spec.parallel.hardware, 8)
              if c.pp == 4 and c.dp == 2 and c.family == "1f1b"}
    assert counts == {4, 7, 8, 14, 16, 28, 32, 56, 112, 224}  # 224 samples per dp rank


def test_zero_candidates_shard_weights_of_any_name():
    """ZeRO shards every weight matrix by shape, not by a name like `w`: on a model of one's
    own defs (matrices called `kernel`) the +zero plans check and rank."""
    text = """
use std.hw
hardware cpu4 = std.hw.cpu(devices = 4)
def dense(x: [*, din], dout) {
  param kernel: f32[din, dout] init normal(0.02)
  return matmul(x, kernel)
}
model net(vocab = 64, d = 32, layers = 2, seq = 8) {
  input tokens: i64[batch, seq]
  input targets: i64[batch, seq] = next(tokens)
  param table: f32[vocab, d]
  x = embedding(tokens, table)
  for i in 0..layers { x = gelu(dense(x, d) as up) }
  loss = cross_entropy(dense(x, vocab) as out, targets)
  output loss
}
train { batch 16; microbatches 4 }
parallel on cpu4 { auto }
"""
    spec = check_text(text, "net.par")
    assert "*.kernel, table: S(0)@dp" in sbp_rules(spec, 4, 1, True)
    result = tune(spec, top=3, where=lambda c: c.zero)
    assert result.ranked and all(s.candidate.zero for s in result.ranked)
