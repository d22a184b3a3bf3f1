"""The contract on plans the sbp search lays out: `*: auto` on the tiny GPT and LLaMA over
dp = 2 x tp = 2 trains one step exactly as the single-process reference (one 4-process launch
for both). The layouts chosen split something over tp (on the CPU's balance GPT's MLP pairs,
LLaMA's head), so the test checks the search's choices, not plain data
parallelism."""

from pathlib import Path

import pytest

from parc.compiler.passes import lower
from parc.dsl.check import check_text

from .harness import compare, compile_pair, launch, variant

pytestmark = pytest.mark.slow

AUTO = "    tokens, targets: S(0)@dp\n    *: auto"


def _split_on_tp(text: str, name: str) -> list[str]:
    graph = lower(check_text(text, f"{name}.par"), "sbp")
    return [p.name for p in graph.params if graph.values[p.name].sbp.on("tp").kind == "S"]


def test_auto_layouts_match_the_reference(tmp_path: Path):
    texts = {"gpt": variant("gpt_tp.par", "dp = 2, tp = 2", sbp=AUTO, layers=2),
             "llama": variant("llama_tiny.par", "dp = 2, tp = 2", sbp=AUTO, layers=2)}
    for name, text in texts.items():
        split = _split_on_tp(text, name)
        assert split, name
    compiled = {name: compile_pair(text, name, tmp_path) for name, text in texts.items()}
    launch([(d, tmp_path / name / "dump") for name, (d, _) in compiled.items()], steps=1)
    for name, (_, ref) in compiled.items():
        compare(tmp_path / name / "dump", ref, tmp_path / name / "refdump")
