"""The contract on plans whose tensor-parallel layout `parc tune` found from the graph: the
odd-named model (Megatron's layout under names no rule knows) and a GQA LLaMA whose one kv
head cannot be split (attention whole, the MLP and vocabulary split) train one step exactly
as their single-process references. Both run in one 4-process launch."""

import re
from pathlib import Path

import pytest

from parc.api import winner_block
from parc.compiler.tune import tune
from parc.dsl.check import check_text

from .harness import compare, compile_pair, launch
from .odd_names import THING, THING_MEGATRON, llama_gqa

pytestmark = pytest.mark.slow


def _tuned(text: str, name: str, where) -> str:
    """The spec with the `parallel` block tune ranks first among the candidates `where`
    accepts, as `parc tune --write` would write it."""
    spec = check_text(text, f"{name}.par")
    result = tune(spec, top=1, where=where)
    block = winner_block(spec, result)
    out = re.sub(r"parallel on \w+ \{[^{}]*\}\n?", lambda m: block, text)  # `{ auto }`
    return re.sub(r"microbatches \d+", f"microbatches {result.ranked[0].candidate.microbatches}",
                  out, count=1)


def test_tuned_tensor_parallel_plans_match_the_reference(tmp_path: Path):
    thing = _tuned(THING, "thing", lambda c: c.tp == 2 and c.dp == 2 and not c.zero)
    for name in THING_MEGATRON:  # the layout the block spells out is Megatron's
        assert re.sub(r"\[\d+\]", "[*]", name) in thing, name
    gqa = _tuned(llama_gqa(1), "gqa", lambda c: c.tp == 2 and c.pp == 1)
    assert "attn.q.w" not in gqa and "ffn.gate.w" in gqa
    compiled = {name: compile_pair(text, name, tmp_path)
                for name, text in (("thing", thing), ("gqa", gqa))}
    launch([(d, tmp_path / name / "dump") for name, (d, _) in compiled.items()], steps=1)
    for name, (_, ref) in compiled.items():
        compare(tmp_path / name / "dump", ref, tmp_path / name / "refdump")
