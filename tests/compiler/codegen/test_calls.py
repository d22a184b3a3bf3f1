"""A def's calls as module instances: the generated stage reads like a model, and is as long
for 48 layers as for 12."""

import json
import re
from pathlib import Path

import pytest

from parc.cli import main
from parc.compiler.codegen.calls import call_of, spans

ROOT = Path(__file__).resolve().parents[3]


def _compile(tmp_path: Path, layers: int) -> Path:
    text = (ROOT / "examples/gpt2_small.par").read_text()
    assert "layers = 12" in text
    spec = tmp_path / f"gpt2_{layers}.par"
    spec.write_text(text.replace("layers = 12", f"layers = {layers}"))
    out = tmp_path / f"out_{layers}"
    assert main(["compile", str(spec), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calls")
    return {layers: _compile(tmp, layers) for layers in (12, 24, 48)}


def _lines(out: Path) -> list[int]:
    return [len((out / f"stage_{k}.py").read_text().splitlines()) for k in range(2)]


def test_gpt2_small_stages_are_short_and_as_long_for_48_layers(programs):
    twelve, forty_eight = _lines(programs[12]), _lines(programs[48])
    assert max(twelve) < 250, twelve
    # 12 layers leave stage 1 one call of its loop's class, a call where 48 have a loop
    # (two lines more); from there on the length is the same
    assert twelve[0] == forty_eight[0] and 0 <= forty_eight[1] - twelve[1] <= 2
    assert _lines(programs[24]) == forty_eight


def test_the_blocks_run_in_a_loop_over_one_class(programs):
    stage = (programs[48] / "stage_0.py").read_text()
    assert re.search(r"^        for i in range\(1, \d+\):$", stage, re.M)
    # the residual add of the previous block fused with this block's norm reads its bias
    assert "self.block[i - 1].mlp_fc2_b" in stage
    assert stage.count("class ") <= 5  # the parameters', three forwards', the stage's
    assert "block_3" not in stage and "block[3]" not in stage  # nothing per layer


def test_parameters_are_named_by_scope(programs):
    import importlib.util

    plan = json.loads((programs[12] / "plan.json").read_text())
    params = {p["name"]: p["attr"] for p in plan["program"]["stages"][0]["params"]}
    assert params["block[3].attn.q.w"] == "block.3.attn_q_w"
    assert params["embed.wte"] == "embed_wte"
    path = programs[12] / "stage_0.py"
    spec = importlib.util.spec_from_file_location("gpt2_stage_0", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stage = module.Stage0({"pp": None, "dp": None, "tp": None})
    names = {name for name, _ in stage.named_parameters()}
    assert names == set(params.values())
    assert stage.get_parameter("block.3.attn_q_w").shape == (768, 384)  # tp 2
    assert ("block.3.attn_q_w", "dp") in stage.STEP_SYNC


def test_call_scopes_and_spans():
    assert call_of("block[3].attn.q") == ("block", 3)
    assert call_of("block[12]") == ("block", 12)
    assert call_of("embed") is None and call_of("") is None
    assert spans(["embed", "block[0]", "block[1]", "block[2]", "lm_loss"]) == [
        "embed", "block[0..2]", "lm_loss"]
    assert spans(["block[4]", "head"]) == ["block[4]", "head"]
