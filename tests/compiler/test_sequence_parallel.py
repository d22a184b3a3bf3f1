"""Megatron sequence parallelism (`sequence_parallel tp`): the sbp pass splits the residual
stream by sequence on the tensor-parallel axis, boxing turns each block's all-reduces into a
reduce-scatter and an all-gather, and the norms and dropouts keep 1/tp of their activations."""

from collections import Counter
from pathlib import Path

import pytest

from parc.compiler.codegen.program import write_program
from parc.compiler.cost import CostModel
from parc.compiler.passes import lower
from parc.compiler.plan import make_plan
from parc.compiler.verify import verify
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from tests.contract.harness import GPT_TP, LLAMA_TP, variant, with_dropout

MODELS = {"gpt": ("gpt_tiny.par", GPT_TP, "block[1]", ("layer_norm",)),
          "llama": ("llama_tiny.par", LLAMA_TP, "llama_block[1]", ("rms_norm",))}


def _text(model: str, sp: bool, drop: bool = True) -> str:
    example, rules, _, _ = MODELS[model]
    text = variant(example, "pp = 2, tp = 2", sbp=rules,
                   extra="  sequence_parallel tp\n" if sp else "")
    return with_dropout(text) if drop else text


def _activation_comms(graph, scope: str) -> Counter:
    """The forward collectives on activations of one block (gradient syncs left out)."""
    params = {p.name for p in graph.params}
    return Counter(op.kind for op in graph.ops if op.scope.startswith(scope)
                   and op.kind in ("all_reduce", "reduce_scatter", "all_gather")
                   and op.inputs[0] not in params)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_blocks_reduce_scatter_and_gather_instead_of_all_reduce(model):
    _, _, block, _ = MODELS[model]
    plain = lower(check_text(_text(model, sp=False), "tp.par"))
    sp = lower(check_text(_text(model, sp=True), "sp.par"))
    verify(sp)
    assert _activation_comms(plain, block) == {"all_reduce": 2}
    assert _activation_comms(sp, block) == {"reduce_scatter": 2, "all_gather": 2}
    for op in sp.ops:  # the residual stream is split by sequence between the regions
        if op.scope.startswith(block) and op.kind in MODELS[model][3] + ("dropout",):
            assert str(sp.values[op.outputs[0]].sbp) == "S(1)@tp", op


def test_stage_code_has_the_sequence_collectives(tmp_path: Path):
    def kinds(plan) -> list[str]:  # the stages' communication, two per block, four blocks
        return [op.kind for op in plan.graph.ops if op.kind in ("reduce_scatter", "all_reduce")]

    sp = make_plan(check_text(_text("gpt", sp=True), "sp.par"))
    program = write_program(sp, tmp_path / "sp", "sp.par", "torch")
    code = "".join(p.read_text() for p in program.glob("stage_*.py"))
    assert kinds(sp) == ["reduce_scatter"] * 8
    assert "C.reduce_scatter(" in code and "C.all_reduce(" not in code
    tp = make_plan(check_text(_text("gpt", sp=False), "tp.par"))
    code = "".join(p.read_text() for p in write_program(tp, tmp_path / "tp", "tp.par",
                                                        "torch").glob("stage_*.py"))
    assert kinds(tp) == ["all_reduce"] * 8
    assert "C.reduce_scatter(" not in code and "C.all_reduce(" in code


@pytest.mark.parametrize("model", sorted(MODELS))
def test_norm_and_dropout_activations_are_one_tp_th(model):
    _, _, block, norms = MODELS[model]
    kept = {}
    for sp in (False, True):
        spec = check_text(_text(model, sp), "x.par")
        graph = lower(spec)
        cost = CostModel(graph, spec.parallel.hardware)
        kept[sp] = sum(size for op in graph.ops if op.kind in norms + ("dropout",)
                       and op.scope.startswith(block) for _, size in cost.saved(op))
    assert kept[False] > 0 and kept[True] == pytest.approx(kept[False] / 2)
    plain = make_plan(check_text(_text(model, False), "tp.par"))
    sp = make_plan(check_text(_text(model, True), "sp.par"))
    for a, b in zip(plain.memory, sp.memory):
        assert b.activations < a.activations


@pytest.mark.parametrize("setting, message", [
    ("sequence_parallel pp", "the pipeline axis splits no tensor"),
    ("sequence_parallel xy", "the mesh has no axis `xy`"),
    ("sequence_parallel 2", "takes the name of a mesh axis"),
])
def test_sequence_parallel_names_a_tensor_axis(setting, message):
    text = _text("gpt", sp=True).replace("sequence_parallel tp", setting)
    with pytest.raises(ParcError) as info:
        check_text(text, "bad.par")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E352" and message in diagnostic.message


def test_sequence_parallel_needs_whole_inputs():
    text = _text("gpt", sp=True).replace("block[*].attn.q.w,", "tokens: S(1)@tp\n    "
                                         "block[*].attn.q.w,", 1)
    with pytest.raises(ParcError) as info:
        check_text(text, "bad.par")
    assert "input `tokens` is S(1)@tp" in info.value.diagnostics[0].message
