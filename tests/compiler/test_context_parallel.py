"""Context parallelism (`context_parallel cp`): the sbp pass splits every activation by
sequence on the axis, attention and rope take their cp-only signatures, the generated code
slices the inputs in the load-balanced layout and calls the ring, the check refuses what the
runtime cannot run at the setting's line, and the cost model charges the ring."""

from pathlib import Path

import pytest
import torch

from parc.compiler.codegen.emit import context_comm
from parc.compiler.codegen.program import write_program
from parc.compiler.cost import CostModel
from parc.compiler.passes import lower
from parc.compiler.plan import make_plan
from parc.compiler.verify import verify
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from parc.ops.sbp import Sbp
from parc.ops.signatures import context_signatures, signatures
from parc.ops.types import TensorT
from parc.runtime import zigzag
from tests.contract.harness import variant

CP = "  context_parallel cp\n"
EXAMPLES = {"gpt": "gpt_tiny.par", "llama": "llama_tiny.par"}


def _text(model: str, mesh: str = "pp = 2, cp = 2", extra: str = CP) -> str:
    return variant(EXAMPLES[model], mesh, sbp="    tokens, targets: S(0)@dp", extra=extra)


@pytest.mark.parametrize("model", sorted(EXAMPLES))
def test_every_activation_is_split_by_sequence_on_the_axis(model):
    graph = lower(check_text(_text(model), "cp.par"))
    verify(graph)
    kinds = set()
    for op in graph.ops:
        for name in op.outputs:
            t = graph.values[name].type
            if t.is_float and t.rank in (3, 4) and "batch" in str(t.shape[0]):
                assert graph.values[name].sbp.on("cp") == Sbp("S", t.rank - 2), op
                kinds.add(op.kind)
    assert "causal_attention" in kinds and ("rope" in kinds) == (model == "llama")
    # the only activation conversions on cp: the inputs sliced; no gather of the sequence
    moved = {op.kind for op in graph.ops if op.attr("axis") == "cp"
             and op.inputs[0] not in {p.name for p in graph.params}}
    assert moved == {"slice"}
    # without the setting the axis keeps attention's sequence whole
    plain = lower(check_text(_text(model, extra=""), "plain.par"))
    attention = next(op for op in plain.ops if op.kind == "causal_attention")
    assert plain.values[attention.outputs[0]].sbp.on("cp").kind != "S" or \
        plain.values[attention.outputs[0]].sbp.on("cp").dim != 2


def test_only_the_context_axis_splits_attention_and_rope_by_sequence():
    q = TensorT("f32", (2, 4, 16, 8))
    for kind in ("causal_attention", "rope"):
        ins = [q] * (3 if kind == "causal_attention" else 1)
        plain = signatures(kind, ins, [q], {"theta": 1e4})
        assert all(s != Sbp("S", 2) for sig in plain for s in sig[0])
        (extra,) = context_signatures(kind, ins)
        assert extra[1] == (Sbp("S", 2),)
    assert context_signatures("softmax", [q]) == []


def test_stage_code_slices_in_the_layout_and_calls_the_ring(tmp_path: Path):
    program = write_program(make_plan(check_text(_text("llama"), "cp.par")), tmp_path / "cp",
                            "cp.par", "torch")
    stages = [p.read_text() for p in sorted(program.glob("stage_*.py"))]
    assert len(stages) == 2 and all("ring_attention(" in s for s in stages)  # each block's class
    code = "".join(stages)
    assert 'Z.take_in(tokens, self.groups["cp"], 1)' in code
    assert 'Z.take_in(targets, self.groups["cp"], 1)' in code
    assert 'positions=Z.positions_in(16, self.groups["cp"]' in code
    assert "C.slice(" not in code and "causal_attention(" not in code.replace(
        "ring_attention(", "")


def test_collectives_on_the_axis_keep_the_layout():
    """Every conversion the emitter writes on the axis agrees with `zigzag.take`: run on one
    process, simulating the ranks (a gather is the shares side by side in rank order)."""
    n, dim = 2, 1
    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)
    shares = [zigzag.take(x, dim, n, r) for r in range(n)]
    gathered = torch.cat(shares, dim=dim)  # what C.all_gather returns on every rank
    assert torch.equal(zigzag.unorder(gathered, dim, n), x)
    ordered = zigzag.order(x, dim, n)  # what C.reduce_scatter cuts contiguously
    for r in range(n):
        assert torch.equal(ordered.chunk(n, dim=dim)[r], shares[r])
    assert context_comm("slice", "x", "g", Sbp("B"), Sbp("S", 1), n, ", dim=1") == \
        "Z.take_in(x, g, 1)"
    assert context_comm("all_gather", "x", "g", Sbp("S", 1), Sbp("B"), n, ", dim=1") == \
        "Z.unorder(C.all_gather(x, g, dim=1), 1, 2)"
    assert context_comm("reduce_scatter", "x", "g", Sbp("P"), Sbp("S", 1), n, ", dim=1") == \
        "C.reduce_scatter(Z.order(x, 1, 2), g, dim=1)"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("context_parallel cp", "context_parallel pp"),
     "the pipeline axis splits no tensor"),
    (lambda t: t.replace("context_parallel cp", "context_parallel xy"),
     "the mesh has no axis `xy`"),
    (lambda t: t.replace("context_parallel cp", "context_parallel 2"),
     "takes the name of a mesh axis"),
    (lambda t: t.replace("seq = 16", "seq = 12"), "does not cut into 2 x cp = 8"),
    (lambda t: t.replace("  stages auto", "  sbp { tokens, targets: S(1)@cp }\n  stages auto"),
     "`tokens` is S(1)@cp"),
    (lambda t: t.replace("  stages auto", "  sbp { block[*].mlp.fc1.w: S(0)@cp }\n  stages auto"),
     "`block[0].mlp.fc1.w` is S(0)@cp"),
    (lambda t: t + "", "does not combine with `sequence_parallel cp`"),
])
def test_the_check_refuses_what_the_ring_cannot_run(edit, message):
    mesh = "pp = 1, cp = 4" if "seq = 12" in edit("seq = 16") else "pp = 2, cp = 2"
    text = edit(_text("gpt", mesh))
    if "sequence_parallel" in message:
        text = text.replace(CP, CP + "  sequence_parallel cp\n")
    with pytest.raises(ParcError) as info:
        check_text(text, "bad.par")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code in ("E353", "E352") and message in diagnostic.message
    if "sequence_parallel" not in message and "takes the name" not in message:
        assert diagnostic.code == "E353"
        line = text.splitlines()[diagnostic.span.line - 1]
        assert line.strip().startswith("context_parallel")


def test_the_cost_model_divides_attention_and_charges_the_ring():
    times, rings = {}, {}
    for cp in (1, 2):
        mesh = "pp = 4" if cp == 1 else "pp = 2, cp = 2"
        spec = check_text(_text("gpt", mesh, CP if cp > 1 else ""), "cp.par")
        graph = make_plan(spec).graph
        cost = CostModel(graph, spec.parallel.hardware)
        op = next(o for o in graph.ops if o.kind == "causal_attention")
        times[cp] = cost.op_time(op)
        rings[cp] = cost.ring_bytes(op), cost.ring_attention_time(op, 0.0)
        if cp == 2:
            # k and v: [batch 4, 2 heads, 8 local tokens, 16] f32 each, sent once forward;
            # backward sends K/V with their f32 gradients once and the gradients home
            kv = 2 * 4 * 2 * 8 * 16 * 4
            assert rings[cp][0] == (kv, 2 * kv + kv)
            assert cost.ring_traffic(op) == 2 * (kv + 2 * kv + kv)  # both ranks' sends
    assert rings[1] == ((0.0, 0.0), (0.0, 0.0))
    assert rings[2][1][1] > 0 and times[2].bwd_input > rings[2][1][1]
    assert times[2].flops == pytest.approx(times[1].flops / 2)


def test_activation_memory_is_one_cp_th():
    kept = {}
    for cp in (1, 2):
        mesh = "pp = 4" if cp == 1 else "pp = 2, cp = 2"
        spec = check_text(_text("gpt", mesh, CP if cp > 1 else ""), "cp.par")
        graph = lower(spec)
        cost = CostModel(graph, spec.parallel.hardware)
        kept[cp] = sum(size for op in graph.ops for _, size in cost.saved(op))
    assert kept[2] == pytest.approx(kept[1] / 2, rel=0.02)


def test_compile_is_refused_in_the_spec_and_on_the_command_line():
    from parc.api import with_compile

    with pytest.raises(ParcError) as info:
        check_text(_text("gpt").replace(CP, CP + "  compile true\n"), "bad.par")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E351" and "context_parallel cp" in diagnostic.message
    spec = check_text(_text("gpt"), "cp.par")
    with pytest.raises(ParcError) as info:
        with_compile(spec, True)
    assert "--compile cannot run with `context_parallel cp`" in info.value.diagnostics[0].message
    assert with_compile(spec, False).parallel.compile is False
