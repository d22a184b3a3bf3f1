"""Tensor-parallel layouts found from the graph's structure (`compiler/auto_tp.py`), as
`parc tune` writes them: Megatron's layout on the std blocks and on the same structure under
other names, attention left whole where its heads do not divide, everything else whole."""

from pathlib import Path

from parc.cli import main
from parc.compiler.auto_tp import find_pairs, layout
from parc.compiler.passes import lower
from parc.compiler.tune import (
    Candidate,
    candidates,
    parallel_text,
    sbp_rules,
    tp_explain,
    tune,
)
from parc.dsl.check import check_file, check_text
from tests.contract.odd_names import (
    THING,
    THING_EXPLICIT,
    THING_MEGATRON,
    llama_gqa,
    megatron_gpt,
    megatron_llama,
)

ROOT = Path(__file__).resolve().parents[2]


def _resolved(spec, dp: int, tp: int, zero: bool = False) -> dict[str, str]:
    """Each parameter's SBP over tp under tune's rules, as `parc check` resolves them (split
    ones only)."""
    c = Candidate(dp, 1, tp, "1f1b", 1, spec.train.microbatches, False, zero)
    block = parallel_text(spec.parallel.hardware.name, c, sbp_rules(spec, dp, tp, zero))
    text = spec.sources[spec.file]
    head, _, _ = text.partition(f"parallel on {spec.parallel.hardware.name}")
    checked = check_text(head + block, "resolved.par")
    names = {p.name for p in spec.model.params}
    return {n: str(s.on("tp")) for n, s in checked.parallel.sbp.items()
            if n in names and str(s.on("tp")) != "B"}


def test_std_gpt_and_llama_get_megatrons_layout():
    gpt = check_file(ROOT / "examples/gpt_tiny.par")
    assert _resolved(gpt, 2, 2) == megatron_gpt(gpt.model.num_layers)
    llama = check_file(ROOT / "examples/llama_tiny.par")
    assert _resolved(llama, 2, 2, zero=True) == megatron_llama(llama.model.num_layers)
    rules = sbp_rules(llama, 2, 2, True)  # ZeRO splits the other dim of the split weights
    assert "llama_block[*].attn.proj.w, llama_block[*].ffn.down.w: S(0)@tp, S(1)@dp" in rules
    assert "llama_loss.output.w: S(1)@tp, S(0)@dp" in rules


def test_odd_names_get_megatrons_layout_from_tune():
    spec = check_text(THING, "thing.par")
    assert _resolved(spec, 2, 2) == THING_MEGATRON
    result = tune(spec, top=1, where=lambda c: c.tp == 2 and c.dp == 2 and not c.zero)
    sbp = result.ranked[0].parallel.sbp
    assert {n: str(s.on("tp")) for n, s in sbp.items() if str(s.on("tp")) != "B"} == \
        THING_MEGATRON
    rules = sbp_rules(spec, 1, 2, False)
    assert rules[0] == ("cell[*].mix.coil.kernel, cell[*].mix.hub.kernel, "
                        "cell[*].mix.tap.kernel, cell[*].ff.foo.kernel, cell[*].ff.bar.kernel: "
                        "S(1)@tp")


def test_written_out_attention_is_split_by_heads_too():
    spec = check_text(THING_EXPLICIT, "explicit.par")
    assert _resolved(spec, 2, 2) == THING_MEGATRON
    pairs = find_pairs(lower(spec, "elaborate"))
    attention = [p for p in pairs if p.kind == "attention"]
    assert len(attention) == 2 and attention[0].heads == (4, 4, 4)
    assert "softmax" in attention[0].through and "causal_attention" not in attention[0].through


def test_heads_that_do_not_divide_leave_attention_whole():
    spec = check_text(llama_gqa(1), "gqa.par")
    graph = lower(spec, "elaborate")
    found = layout(graph, 2)
    assert [p.heads for p, _ in found.kept] == [(4, 1, 1)] * 4
    assert "heads (4 and 1) do not all divide by tp=2" in found.kept[0][1]
    assert _resolved(spec, 2, 2) == megatron_llama(4, attention=False)
    assert 2 in {c.tp for c in candidates(spec, spec.parallel.hardware, 4)}  # kv heads aside
    assert not any(p.kind == "attention" for p in layout(graph, 4).pairs)  # 4 q heads, 1 kv


def test_anything_else_stays_whole():
    """A norm between two matmuls, an activation read twice, a weight read twice, a chain of
    three matmuls (the middle one is a row already), a vocabulary that does not divide."""
    text = """
use std.hw
hardware hw = std.hw.cpu(devices = 2)
def lin(x: [*, din], dout) {
  param m: f32[din, dout] init normal(0.05)
  return matmul(x, m)
}
def unit(x: [*, d]) {
  param g: f32[d] init ones
  return rms_norm(x, g)
}
model net(vocab = 65, d = 16) {
  input t: i64[batch, 4]
  input u: i64[batch, 4] = next(t)
  param emb: f32[vocab, d]
  param shared: f32[d, d]
  x = embedding(t, emb)
  x = x + lin(unit(lin(x, 32) as a1), d) as a2
  h = gelu(lin(x, d) as b1)
  x = x + lin(h, d) as b2 + h
  x = x + matmul(gelu(matmul(x, shared)), shared)
  x = x + lin(gelu(lin(gelu(lin(x, 32) as c1), 32) as c2), d) as c3
  loss = cross_entropy(lin(x, vocab) as out, u)
  output loss
}
train { batch 4 }
parallel on hw { auto }
"""
    spec = check_text(text, "net.par")
    assert _resolved(spec, 1, 2) == {"c1.m": "S(1)", "c2.m": "S(0)"}


def test_explain_says_what_was_paired_and_what_stayed_whole():
    lines = tp_explain(check_text(llama_gqa(1), "gqa.par"), 2)
    assert lines[0] == ("paired: llama_block[*].ffn.gate.w, llama_block[*].ffn.up.w split by "
                        "columns, through silu, mul (elementwise), into llama_block[*].ffn.down.w "
                        "split by rows (4 times)")
    assert lines[1].startswith("left whole: attention: llama_block[*].attn.q.w")
    assert lines[1].endswith("heads (4 and 1) do not all divide by tp=2 (4 times)")
    assert "vocabulary: llama_loss.output.w (head into cross_entropy)" in lines[3]
    assert tp_explain(check_text(llama_gqa(1), "gqa.par"), 1) == []


def test_tune_explain_prints_the_pairs_of_the_plans_it_compares(tmp_path, capsys):
    spec_file = tmp_path / "thing.par"
    spec_file.write_text(THING)
    assert main(["tune", str(spec_file), "--top", "3", "--explain"]) == 0
    out = capsys.readouterr().out
    top = tune(check_file(spec_file), top=3).ranked[:2]
    for label, scored in zip(("winner", "runner-up"), top):
        header = f"the {label}'s tensor parallelism (tp={scored.candidate.tp}), from the graph:"
        assert (header in out) == (scored.candidate.tp > 1)
    if any(s.candidate.tp > 1 for s in top):
        assert "  paired: cell[*].ff.foo.kernel, cell[*].ff.bar.kernel split by columns" in out
