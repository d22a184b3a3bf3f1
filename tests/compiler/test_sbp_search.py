"""The sbp search: `*: auto` finds Megatron's layout where it is cheapest, and bad uses of
`auto` are refused at the rule's line."""

import re
import time
from pathlib import Path

import pytest

from parc.compiler.auto_tp import layout
from parc.compiler.passes import lower
from parc.compiler.passes.context import PassContext
from parc.compiler.passes.elaborate import elaborate
from parc.compiler.passes.sbp_search import search
from parc.compiler.passes.shapes import shapes
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from tests.contract.odd_names import THING, THING_MEGATRON, megatron_gpt, megatron_llama

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


H100 = "hardware node = std.hw.h100_node(nodes = 1)"
AUTO = "parallel on node {\n  mesh (dp = 4, tp = 2)\n  sbp {\n    %s: S(0)@dp\n    *: auto\n  }\n}"


def _sized(text: str, hardware: str, sizes: tuple[str, str], batch: tuple[str, str],
           inputs: str) -> str:
    """A tiny model at a size where tensor parallelism pays, on an H100 node, `*: auto`."""
    text = re.sub(hardware, H100, text).replace(*sizes).replace(*batch)
    return re.sub(r"parallel on \w+ \{( auto \}|.*?\n\})", AUTO % inputs, text, flags=re.S)


LLAMA = _sized((ROOT / "examples/llama_tiny.par").read_text(), r"hardware cpu4 = .*",
               ("vocab = 64, d = 32, heads = 4, kv_heads = 2, hidden = 64, layers = 4, seq = 16",
                "vocab = 32000, d = 1024, heads = 16, kv_heads = 8, hidden = 2816, layers = 4, "
                "seq = 1024"), ("batch 16; microbatches 4", "batch 256; microbatches 8"),
               "tokens, targets")
ODD = _sized(THING, r"hardware hw = .*",
             ("vocab = 64, d = 32, n_h = 4, wide = 48, depth = 2, seq = 8",
              "vocab = 32000, d = 1024, n_h = 16, wide = 2816, depth = 2, seq = 1024"),
             ("batch 8; microbatches 2", "batch 256; microbatches 8"), "ids, nxt")


@pytest.mark.parametrize("text, want", [(LLAMA, megatron_llama(4)), (ODD, THING_MEGATRON)],
                         ids=["llama", "odd_names"])
def test_auto_picks_megatron_on_llama_and_odd_names(text: str, want: dict[str, str]):
    spec = check_text(text, "model.par")
    graph = shapes(elaborate(spec))
    context = PassContext(hardware=spec.parallel.hardware, precision=spec.train.precision)
    result = search(graph, context, spec.parallel.auto_sbp)
    (tp,) = result.axes
    got = {name: str(sbp) for name, sbp in tp.layouts.items() if sbp.kind != "B"}
    assert got == want
    structural = layout(graph, 2).splits  # tune's graph-derived layout agrees
    assert {name: f"S({dim})" for name, dim in structural.items()} == got
    assert result.seconds < 5


def test_annotated_parameters_keep_their_rule():
    spec = check_text(_gpt2_auto("tokens, targets: S(0)@dp\n    block[*].attn.*: B\n"
                                 "    *: auto"), "gpt2.par")
    assert not any(".attn." in name for name in spec.parallel.auto_sbp)
    assert "block[0].mlp.fc1.w" in spec.parallel.auto_sbp
    split = _split_on_tp(lower(spec, "sbp"))
    assert not any(".attn." in name for name in split)


@pytest.mark.parametrize("rules, code, line", [
    ("tokens: auto\n    targets: S(0)@dp", "E317", 28),
    ("tokens, targets: S(0)@dp\n    *: auto, B@dp", "E317", 29),
])
def test_bad_auto_is_refused_at_its_rule(rules: str, code: str, line: int):
    with pytest.raises(ParcError) as info:
        check_text(_gpt2_auto(rules), "gpt2.par")
    text = info.value.render()
    assert f"error[{code}]" in text and f"gpt2.par:{line}:" in text, text
