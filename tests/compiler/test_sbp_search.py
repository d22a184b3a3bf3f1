"""The sbp search: `*: auto` finds Megatron's layout where it is cheapest, and bad uses of
`auto` are refused at the rule's line."""

import re
import time
from pathlib import Path

import pytest

from parc.compiler.passes import lower
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from tests.contract.odd_names import megatron_gpt

ROOT = Path(__file__).resolve().parents[2]


def _gpt2_auto(rules: str = "tokens, targets: S(0)@dp\n    *: auto") -> str:
    text = (ROOT / "examples/gpt2_small.par").read_text()
    text = re.sub(r"sbp \{.*?\n  \}", "sbp {\n    " + rules + "\n  }", text, flags=re.S)
    return text.replace("pp = 2, dp = 2, tp = 2", "dp = 4, tp = 2")


def _split_on_tp(graph) -> dict[str, str]:
    return {p.name: str(graph.values[p.name].sbp.on("tp")) for p in graph.params
            if graph.values[p.name].sbp.on("tp").kind != "B"}


def test_auto_picks_megatron_on_gpt2_small_quickly():
    spec = check_text(_gpt2_auto(), "gpt2.par")
    assert "block[0].attn.q.w" in spec.parallel.auto_sbp
    start = time.perf_counter()
    graph = lower(spec, "sbp")
    assert time.perf_counter() - start < 10
    assert _split_on_tp(graph) == megatron_gpt(12)
    assert all(graph.values[p.name].sbp.on("dp").kind == "B" for p in graph.params)


def test_annotated_parameters_keep_their_rule():
    spec = check_text(_gpt2_auto("tokens, targets: S(0)@dp\n    block[*].mlp.*: B\n"
                                 "    *: auto"), "gpt2.par")
    split = _split_on_tp(lower(spec, "sbp"))
    assert not any(".mlp." in name for name in split)
    assert split["block[0].attn.q.w"] == "S(1)"


@pytest.mark.parametrize("rules, code, line", [
    ("tokens: auto\n    targets: S(0)@dp", "E317", 28),
    ("tokens, targets: S(0)@dp\n    *: auto, B@dp", "E317", 29),
])
def test_bad_auto_is_refused_at_its_rule(rules: str, code: str, line: int):
    with pytest.raises(ParcError) as info:
        check_text(_gpt2_auto(rules), "gpt2.par")
    text = info.value.render()
    assert f"error[{code}]" in text and f"gpt2.par:{line}:" in text, text
