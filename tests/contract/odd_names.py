"""Models whose tensor-parallel structure has to be found from the graph: Megatron's shapes
(attention, a gated MLP, a vocabulary-parallel table and head) under names no rule knows, and
the megatron layout each should get, name by name."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# rotary attention with biased projections `coil`, `hub`, `tap` into `spout`, a SwiGLU-like
# `foo`, `bar` -> `baz`, an embedding `lexicon` and an untied, biased head `readout`
THING = """
use std.hw
hardware hw = std.hw.cpu(devices = 4)

def dense(x: [*, din], dout) {
  param kernel: f32[din, dout] init normal(0.05)
  param shift: f32[dout] init normal(0.05)
  return matmul(x, kernel) + shift
}
def plain(x: [*, din], dout) {
  param kernel: f32[din, dout] init normal(0.05)
  return matmul(x, kernel)
}
def scale_norm(x: [*, d]) {
  param gain: f32[d] init ones
  return rms_norm(x, gain)
}
def mixer(x: [bb, ss, d], n_h) {
  coil = split_heads(dense(x, d) as coil, n_h)
  hub = split_heads(dense(x, d) as hub, n_h)
  tap = split_heads(dense(x, d) as tap, n_h)
  return plain(merge_heads(causal_attention(rope(coil), rope(hub), tap)), d) as spout
}
def churn(x: [*, d], wide) {
  a = silu(plain(x, wide) as foo)
  return plain(a * plain(x, wide) as bar, d) as baz
}
def cell(x: [bb, ss, d], n_h, wide) {
  x = x + mixer(scale_norm(x) as pre, n_h) as mix
  return x + churn(scale_norm(x) as post, wide) as ff
}
model thing(vocab = 64, d = 32, n_h = 4, wide = 48, depth = 2, seq = 8) {
  input ids: i64[batch, seq]
  input nxt: i64[batch, seq] = next(ids)
  param lexicon: f32[vocab, d] init normal(0.05)
  x = embedding(ids, lexicon)
  for i in 0..depth { x = cell(x, n_h, wide) }
  loss = cross_entropy(dense(scale_norm(x) as fin, vocab) as readout, nxt)
  output loss
}
train {
  batch 8; microbatches 2; steps 1
  optimizer adamw(lr = 1e-2)
  data synthetic(seed = 0)
}
parallel on hw { auto }
"""

# Megatron's layout of THING over tp, per parameter (every other one replicated)
THING_MEGATRON = {
    **{f"cell[{i}].mix.{p}.kernel": "S(1)" for i in range(2) for p in ("coil", "hub", "tap")},
    **{f"cell[{i}].mix.{p}.shift": "S(0)" for i in range(2) for p in ("coil", "hub", "tap")},
    **{f"cell[{i}].ff.{p}.kernel": "S(1)" for i in range(2) for p in ("foo", "bar")},
    **{f"cell[{i}].mix.spout.kernel": "S(0)" for i in range(2)},
    **{f"cell[{i}].ff.baz.kernel": "S(0)" for i in range(2)},
    "lexicon": "S(0)", "readout.kernel": "S(1)", "readout.shift": "S(0)",
}

# the same attention written out: scores, a causal softmax, the weighted sum
THING_EXPLICIT = THING.replace(
    "  return plain(merge_heads(causal_attention(rope(coil), rope(hub), tap)), d) as spout",
    "  s = softmax(matmul(rope(coil), transpose(rope(hub))) * 0.35, causal = true)\n"
    "  return plain(merge_heads(matmul(s, tap)), d) as spout")


def llama_gqa(kv_heads: int) -> str:
    """The tiny LLaMA with `kv_heads` key/value heads and `parallel { auto }`."""
    text = (ROOT / "examples/llama_tiny.par").read_text().replace("kv_heads = 2",
                                                                   f"kv_heads = {kv_heads}")
    text = text.replace("steps 20", "steps 1")
    return re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  auto\n}", text,
                  flags=re.S)


def megatron_gpt(layers: int) -> dict[str, str]:
    """What the name-based rules gave the std GPT (vocabulary-parallel tied table)."""
    out = {"embed.wte": "S(0)"}
    for i in range(layers):
        b = f"block[{i}]"
        out |= {f"{b}.attn.{p}.{w}": "S(1)" if w == "w" else "S(0)" for p in "qkv"
                for w in "wb"}
        out |= {f"{b}.mlp.fc1.w": "S(1)", f"{b}.mlp.fc1.b": "S(0)",
                f"{b}.attn.proj.w": "S(0)", f"{b}.mlp.fc2.w": "S(0)"}
    return out


def megatron_llama(layers: int, attention: bool = True) -> dict[str, str]:
    """What the name-based rules gave the std LLaMA (untied head split by vocabulary);
    `attention=False`: q, k, v and proj left whole."""
    out = {"llama_embed.wte": "S(0)", "llama_loss.output.w": "S(1)"}
    for i in range(layers):
        b = f"llama_block[{i}]"
        if attention:
            out |= {f"{b}.attn.{p}.w": "S(1)" for p in "qkv"} | {f"{b}.attn.proj.w": "S(0)"}
        out |= {f"{b}.ffn.gate.w": "S(1)", f"{b}.ffn.up.w": "S(1)", f"{b}.ffn.down.w": "S(0)"}
    return out
