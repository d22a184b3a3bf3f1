"""Parallelism falls out of SBP annotations: data, Megatron tensor, both, and bad annotations."""

from collections import Counter
from pathlib import Path

import pytest

from parc.compiler.passes import lower
from parc.compiler.summary import bytes_per_step, communications
from parc.dsl.check import check_file, check_text
from parc.dsl.diagnostics import ParcError
from parc.ops.comm import COMMS

ROOT = Path(__file__).resolve().parents[2]


def comm_ops(graph, scope_prefix=""):
    return [op for op in graph.ops if op.kind in COMMS and op.scope.startswith(scope_prefix)]


def test_data_parallel_is_one_gradient_all_reduce_per_parameter():
    graph = lower(check_file(ROOT / "examples/gpt_tiny.par"))
    ops = comm_ops(graph)
    assert {(op.kind, op.attr("axis")) for op in ops} == {("grad_all_reduce", "dp")}
    params = {p.name for p in graph.params}
    assert sorted(op.inputs[0] for op in ops) == sorted(params)
    # activations stay split by batch from the embedding to the loss
    for op in graph.ops:
        for out in op.outputs:
            if op.kind not in COMMS and graph.values[out].type.rank >= 3:
                assert str(graph.values[out].sbp) == "S(0)@dp", op


@pytest.fixture(scope="module")
def tp():
    return lower(check_file(ROOT / "examples/gpt_tp.par"))


def test_megatron_mlp_has_one_all_reduce_each_way(tp):
    for i in range(4):
        ops = [op for op in comm_ops(tp, f"block[{i}].mlp") if op.attr("axis") == "tp"]
        assert [(op.kind, op.scope) for op in ops] == [
            ("grad_all_reduce", f"block[{i}].mlp.fc1"),  # backward: sum the input's gradient
            ("all_reduce", f"block[{i}].mlp.fc2"),  # forward: sum the row-parallel partials
        ]
        inside = [op for op in tp.ops if op.scope.startswith(f"block[{i}].mlp")
                  and op.kind in ("matmul", "gelu", "add")]
        hidden = [str(tp.values[op.outputs[0]].sbp) for op in inside][:3]
        assert hidden == ["S(0)@dp, S(2)@tp"] * 3  # fc1, its bias, gelu: split, no comm


def test_attention_splits_heads_over_tp(tp):
    attn = [op for op in tp.ops if op.kind == "causal_attention"]
    assert all(str(tp.values[op.outputs[0]].sbp) == "S(0)@dp, S(1)@tp" for op in attn)
    for i in range(4):
        ops = [(op.kind, op.scope) for op in comm_ops(tp, f"block[{i}].attn")
               if op.attr("axis") == "tp"]
        assert ops == [("grad_all_reduce", f"block[{i}].attn.q"),
                       ("all_reduce", f"block[{i}].attn.proj")]


def test_two_dimensional_mesh_combines_data_and_tensor_parallelism(tp):
    counts = Counter((op.kind, op.attr("axis")) for op in comm_ops(tp))
    # two each way per block, and the vocabulary-parallel embedding (forward) and head (backward)
    assert counts == {("all_reduce", "tp"): 9, ("grad_all_reduce", "tp"): 9,
                      ("grad_all_reduce", "dp"): len(tp.params)}


def test_gpt2_small_communication_matches_a_hand_count():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    graph = lower(spec)
    counts = Counter((op.kind, op.attr("axis")) for op in comm_ops(graph))
    layers = 12
    # Megatron: 2 all-reduces per transformer layer forward and 2 backward on tp; data
    # parallel: one gradient all-reduce per parameter (the tied embedding is one parameter).
    assert counts == {("all_reduce", "tp"): 2 * layers, ("grad_all_reduce", "tp"): 2 * layers,
                      ("grad_all_reduce", "dp"): 16 * layers + 4}
    micro, m = 32, 16  # 512 sequences in 16 microbatches
    activation = micro * 1024 * 768 * 4  # bytes of one [32, 1024, 768] f32 activation
    d, vocab, seq = 768, 50304, 1024
    params = vocab * d + seq * d + layers * (12 * d * d + 13 * d) + 2 * d
    assert params == 124_475_904
    tp_bytes = 4 * layers * 2 * activation * (2 - 1)  # 4 all-reduces of 2T(n-1) per layer
    dp_bytes = 2 * (params * 4) * (2 - 1)  # gradients all-reduced once per step
    assert bytes_per_step(graph, m) == m * tp_bytes + dp_bytes
    assert all(r.of_param for r in communications(graph) if r.axis == "dp")


def test_bad_annotations_are_diagnostics_at_their_line():
    base = (ROOT / "examples/gpt_tp.par").read_text()
    text = base.replace("    *: B\n", "    embed.wpe: S(1)@tp, S(0)@tp\n    *: B\n")
    with pytest.raises(ParcError) as exc:
        check_text(text, "t.par")
    (diag,) = exc.value.diagnostics
    assert diag.code == "E312" and text.splitlines()[diag.span.line - 1].strip().startswith(
        "embed.wpe")
    six = base.replace("vocab = 64", "vocab = 6").replace("mesh (dp = 2, tp = 2)", "mesh (tp = 4)")
    six = six.replace("tokens, targets: S(0)@dp\n", "")
    with pytest.raises(ParcError) as exc:
        check_text(six, "six.par")
    messages = [d.message for d in exc.value.diagnostics]
    assert any("does not split evenly over `tp` (4 devices)" in m for m in messages)


def test_vocabulary_parallel_head_never_gathers_the_logits(tp):
    """Megatron's vocabulary-parallel embedding and cross-entropy: the tied table split by rows
    over tp; the logits stay split by vocabulary into the loss, which is whole on every rank."""
    graph = tp
    loss = next(op for op in graph.ops if op.kind == "cross_entropy")
    logits = graph.values[loss.inputs[0]]
    assert str(logits.sbp) == "S(0)@dp, S(2)@tp"
    assert str(graph.values[loss.outputs[0]].sbp) == "P@dp, B@tp"
    head = [(op.kind, op.attr("axis")) for op in comm_ops(graph, "lm_loss")
            if op.attr("axis") == "tp"]
    assert head == [("grad_all_reduce", "tp")]  # only the hidden state's gradient
    embed = [(op.kind, op.attr("axis")) for op in comm_ops(graph, "embed")
             if op.attr("axis") == "tp"]
    assert embed == [("all_reduce", "tp")]  # each rank looked up its own rows


def test_zero_gathers_the_weights_and_keeps_the_batch_split():
    """ZeRO (every weight S(0)@dp, as `parc tune` writes it): the activations stay split by
    batch from the embedding to the loss, and the sharded weights are gathered where they are
    used. (Gathering the activations instead moves fewer bytes in a tiny model, but then every
    later op runs replicated on all dp ranks.)"""
    text = (ROOT / "examples/gpt_tiny.par").read_text().replace(
        "    *: B\n", "    *.w: S(0)@dp\n").replace("mesh (pp = 2, dp = 2)", "mesh (dp = 4)")
    graph = lower(check_text(text, "zero.par"))
    for op in graph.ops:
        for out in op.outputs:
            if op.kind not in COMMS and graph.values[out].type.rank >= 3:
                assert str(graph.values[out].sbp) == "S(0)@dp", op
    gathered = {op.inputs[0] for op in comm_ops(graph) if op.kind == "all_gather"}
    assert gathered == {p.name for p in graph.params if p.name.endswith(".w")}
    loss = dict(graph.outputs)["loss"]
    assert str(graph.values[loss].sbp) == "P@dp"
