"""Megatron sequence parallelism (`sequence_parallel tp`) under the correctness contract: a
tp2 x pp2 plan of the GPT and of the LLaMA, with dropout on the residual branches and with a
vocabulary-parallel embedding and head, and the GPT with no split weights at all, against the
single-process reference. One launch."""

from pathlib import Path

import pytest

from .harness import (
    GPT_TP,
    GPT_VOCAB,
    LLAMA_TP,
    LLAMA_VOCAB,
    compare,
    compile_pair,
    launch,
    variant,
    with_dropout,
)

pytestmark = pytest.mark.slow

SP = "  sequence_parallel tp\n"


PLANS = {
    "gpt_sp_drop": ("gpt_tiny.par", GPT_TP, True),
    "gpt_sp_vocab": ("gpt_tiny.par", GPT_TP + GPT_VOCAB, False),
    "llama_sp_drop": ("llama_tiny.par", LLAMA_TP, True),
    "llama_sp_vocab": ("llama_tiny.par", LLAMA_TP + LLAMA_VOCAB, False),
    # no split weights: everything split by sequence, attention re-split by heads (all-to-all)
    "gpt_sp_only": ("gpt_tiny.par", "", True),
}


def test_sequence_parallel_matches_reference(tmp_path: Path):
    compiled = {}
    for name, (example, rules, drop) in PLANS.items():
        text = variant(example, "pp = 2, tp = 2", sbp=rules, extra=SP)
        if drop:
            text = with_dropout(text)
            assert "drop = 0.1" in text
        compiled[name] = compile_pair(text, name, tmp_path)
        stages = "".join(p.read_text() for p in compiled[name][0].glob("stage_*.py"))
        if rules:
            assert "C.reduce_scatter(" in stages and "C.all_gather(" in stages
        else:
            assert "C.all_to_all(" in stages and "C.all_reduce(" not in stages
    launch([(d, tmp_path / name / "dump") for name, (d, _) in compiled.items()], steps=2)
    failures = []
    for name, (_, ref) in compiled.items():
        try:
            compare(tmp_path / name / "dump", ref, tmp_path / name / "refdump", steps=2)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)
