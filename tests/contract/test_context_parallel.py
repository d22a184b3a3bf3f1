"""Context parallelism (`context_parallel cp`, ring attention over the load-balanced sequence
layout) under the correctness contract: the GPT (learned positions, sliced in the layout) and
the LLaMA (rope at the global positions, grouped-query attention) on cp2 x pp2, dp2 x cp2 and
with Megatron's tensor parallelism on another axis (tp2 x cp2), with recomputation and with
dropout,
against the single-process reference. One launch of four ranks."""

from pathlib import Path

import pytest

from .harness import GPT_TP, LLAMA_TP, compare, compile_pair, launch, variant, with_dropout

pytestmark = pytest.mark.slow

CP = "  context_parallel cp\n"
BATCH = "    tokens, targets: S(0)@dp"

PLANS = {  # example, mesh, sbp rules, extra settings
    "gpt_cp_pp": ("gpt_tiny.par", "pp = 2, cp = 2", BATCH, ""),
    "llama_cp_pp": ("llama_tiny.par", "pp = 2, cp = 2", BATCH, ""),
    "gpt_dp_cp": ("gpt_tiny.par", "dp = 2, cp = 2", BATCH, ""),
    "llama_dp_cp": ("llama_tiny.par", "dp = 2, cp = 2", BATCH, ""),
    # Megatron's weights on tp (attention by heads) and the sequence on cp
    "llama_tp_cp": ("llama_tiny.par", "tp = 2, cp = 2", LLAMA_TP, ""),
    "gpt_tp_cp": ("gpt_tiny.par", "cp = 2, tp = 2", GPT_TP, ""),
    # the ring runs again in the recomputed forward
    "gpt_cp_pp_recompute": ("gpt_tiny.par", "pp = 2, cp = 2", BATCH, "  recompute all\n"),
}
# dropout's masks follow each element's place in the load-balanced layout
DROPOUT = {"gpt_cp_pp_drop": ("gpt_tiny.par", "pp = 2, cp = 2", BATCH, ""),
           "llama_dp_cp_drop": ("llama_tiny.par", "dp = 2, cp = 2", BATCH, "")}


def test_context_parallel_matches_reference(tmp_path: Path):
    compiled = {}
    for name, (example, mesh, rules, extra) in (PLANS | DROPOUT).items():
        text = variant(example, mesh, sbp=rules, extra=CP + extra)
        if name in DROPOUT:
            text = with_dropout(text)
            assert "drop = 0.1" in text
        compiled[name] = compile_pair(text, name, tmp_path)
        stages = "".join(p.read_text() for p in compiled[name][0].glob("stage_*.py"))
        assert "ring_attention(" in stages and "Z.take_in(" in stages
        assert ("positions=Z.positions_in(" in stages) == name.startswith("llama")
        assert (', self.groups["cp"], True)' in stages) == (name in DROPOUT)
    launch([(d, tmp_path / name / "dump") for name, (d, _) in compiled.items()], steps=2)
    failures = []
    for name, (_, ref) in compiled.items():
        try:
            compare(tmp_path / name / "dump", ref, tmp_path / name / "refdump", steps=2)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
