from pathlib import Path

import pytest

from parc.dsl.check import check_file, check_text
from parc.dsl.diagnostics import ParcError
from parc.ops.dims import Dim
from parc.ops.sbp import NdSbp, Sbp

GPT = Path(__file__).parent / "gpt_inline.par"


@pytest.fixture(scope="module")
def spec():
    return check_file(GPT)


def errors(text: str) -> list[str]:
    with pytest.raises(ParcError) as exc:
        check_text(text, "t.par")
    return [f"{d.code} {d.message}" for d in exc.value.diagnostics]


def test_parameters_are_named_by_call_scope(spec):
    names = [p.name for p in spec.model.params]
    assert names[:4] == ["embed.wte", "embed.wpe", "block[0].ln1.w", "block[0].ln1.b"]
    assert "block[3].attn.proj.w" in names and "block[3].mlp.fc2.b" in names
    assert names[-2:] == ["lm_loss.ln_f.w", "lm_loss.ln_f.b"]
    assert len(names) == len(set(names))


def test_shapes_are_symbolic_in_batch(spec):
    types = {i.name: str(i.type) for i in spec.model.inputs}
    assert types == {"tokens": "i64[batch, 16]", "targets": "i64[batch, 16]"}
    first = spec.model.ops[0]
    assert first.kind == "embedding"
    assert spec.model.values[first.outputs[0]].shape == (Dim.symbol("batch"), Dim.of(16),
                                                        Dim.of(32))
    loss = spec.model.values[spec.model.outputs["loss"]]
    assert str(loss) == "f32[]"


def test_top_level_scopes_in_model_order(spec):
    assert [s.name for s in spec.model.scopes] == [
        "embed", "block[0]", "block[1]", "block[2]", "block[3]", "lm_loss"]
    assert spec.model.num_layers == 4


def test_parallel_spec(spec):
    par = spec.parallel
    assert par.mesh == (("pp", 2), ("dp", 2))
    assert par.sbp["tokens"] == NdSbp((("dp", Sbp("S", 0)),))
    assert par.sbp["block[0].attn.q.w"] == NdSbp((("dp", Sbp("B")),))
    assert par.stages == (("embed", "block[0]", "block[1]"), ("block[2]", "block[3]", "lm_loss"))
    assert par.schedule.name == "1f1b" and par.num_stages == 2
    assert par.hardware.devices == 4 and par.hardware.memory == 8e9
    assert par.hardware.intra_latency == pytest.approx(20e-6)


def test_train_spec(spec):
    train = spec.train
    assert (train.batch, train.microbatches, train.steps) == (16, 4, 20)
    assert train.optimizer.name == "adamw" and train.optimizer.lr == 1e-3
    assert train.microbatch_size == 4


def test_overrides_rebind_hyperparameters():
    spec = check_file(GPT, overrides={"d": Dim.of(64)})
    assert spec.model.hyper["d"] == 64
    assert str(spec.model.params[0].type) == "f32[64, 64]"
    with pytest.raises(ParcError, match="outside the calls the model makes"):
        check_file(GPT, overrides={"layers": Dim.of(2)})  # the explicit stages name block[2]


def test_first_matching_sbp_rule_wins():
    text = GPT.read_text().replace("    *: B\n", "    block[*].attn.*.w: S(1)@dp\n    *: B\n")
    spec = check_text(text, "t.par")
    assert spec.parallel.sbp["block[2].attn.k.w"].on("dp") == Sbp("S", 1)
    assert spec.parallel.sbp["block[2].mlp.fc1.w"].on("dp") == Sbp("B")


def test_several_semantic_errors_reported_together():
    text = GPT.read_text().replace("vocab = 64", "vocab = 64, bad = foo").replace(
        "batch 16;", "batch 16; stepz 2;")
    found = errors(text)
    assert any("E110 `foo` is not defined" in f for f in found)
    assert any("E143 unknown setting `stepz`" in f for f in found)


def test_errors_inside_a_def_name_the_call():
    text = GPT.read_text().replace("param wpe: f32[s, d]", "param wpe: f32[s, d, q]")
    with pytest.raises(ParcError) as exc:
        check_text(text, "t.par")
    (diag,) = exc.value.diagnostics
    assert diag.message == "`q` is not defined"
    assert diag.note == "in `embed`, called at t.par:47:12"


def test_gqa_and_stage_ranges_and_interleaved():
    text = GPT.read_text().replace("stage 0 = embed, block[0..2]\n  stage 1 = block[2..4], lm_loss",
                                   "stages auto").replace("schedule 1f1b",
                                                          "schedule interleaved(virtual = 2)")
    spec = check_text(text, "t.par")
    assert spec.parallel.num_stages == 4 and spec.parallel.stages == "auto"


def test_library_file_without_model_checks(tmp_path):
    lib = tmp_path / "lib.par"
    lib.write_text("def double(x: [*, d]) {\n  return x * 2\n}\n")
    main = tmp_path / "main.par"
    main.write_text('use "lib.par"\nmodel m(d = 4) {\n  input x: f32[batch, d]\n'
                    "  y = double(x) + lib.double(x) as again\n  output y\n}\n")
    spec = check_file(main)
    assert [op.kind for op in spec.model.ops] == ["scale", "scale", "add"]


def test_use_cycle_is_reported(tmp_path):
    (tmp_path / "a.par").write_text('use "b.par"\n')
    (tmp_path / "b.par").write_text('use "a.par"\n')
    with pytest.raises(ParcError) as exc:
        check_file(tmp_path / "a.par")
    assert exc.value.diagnostics[0].code == "E102"


def test_missing_file_is_a_diagnostic(tmp_path):
    with pytest.raises(ParcError) as exc:
        check_file(tmp_path / "nope.par")
    assert exc.value.diagnostics[0].code == "E100"


def test_loop_limit_stops_elaboration():
    found = errors("model m {\n  input x: f32[batch, 4]\n  for i in 0..10000000 {\n"
                   "    x = gelu(x)\n  }\n  output x\n}\n")
    assert found == ["E161 the loop runs 10000000 times; the limit is 100000"]


def test_recursion_is_bounded():
    found = errors("def f(x) {\n  return f(x)\n}\nmodel m {\n  input x: f32[batch, 4]\n"
                   "  y = f(x)\n  output y\n}\n")
    assert found[0].startswith("E121 calls nest deeper than 64")
