"""The IR round-trips through its text and JSON forms after every pass, and verifies."""

import json
from dataclasses import replace

import pytest

from parc.compiler.ir import print_graph
from parc.compiler.ir_json import graph_from_json, graph_to_json
from parc.compiler.ir_parse import IrSyntaxError, parse_graph
from parc.compiler.passes import PASS_NAMES, lower
from parc.compiler.plan import planned_graph
from parc.compiler.verify import VerifyError, verify
from parc.dsl.check import check_file
from tests.examples import EXAMPLES, ROOT


@pytest.fixture(scope="module", params=EXAMPLES, ids=lambda p: p.stem)
def spec(request):
    return check_file(request.param)


@pytest.mark.parametrize("after", PASS_NAMES)
def test_round_trip_and_verify(spec, after):
    graph = planned_graph(spec, after, verify=True) if after in ("partition", "fuse") \
        else lower(spec, after, verify=True)
    text = print_graph(graph)
    assert parse_graph(text) == graph
    assert print_graph(parse_graph(text)) == text
    assert graph_from_json(json.loads(json.dumps(graph_to_json(graph)))) == graph


def test_spans_survive_the_text_form(spec):
    graph = lower(spec, "elaborate")
    again = parse_graph(print_graph(graph))
    assert [str(op.span) for op in again.ops] == [str(op.span) for op in graph.ops]


@pytest.fixture(scope="module")
def tiny():
    return lower(check_file(ROOT / "examples/gpt_tp.par"))


def test_verifier_rejects_use_before_definition(tiny):
    ops = (tiny.ops[-1],) + tiny.ops[:-1]
    with pytest.raises(VerifyError, match="before it is defined"):
        verify(replace(tiny, ops=ops))


def test_verifier_rejects_wrong_types(tiny):
    op = next(op for op in tiny.ops if op.kind == "gelu")
    values = dict(tiny.values)
    out = values[op.outputs[0]]
    values[op.outputs[0]] = replace(out, type=replace(out.type, dtype="f16"))
    with pytest.raises(VerifyError, match="results should be"):
        verify(replace(tiny, values=values))


def test_verifier_rejects_an_invalid_signature(tiny):
    op = next(op for op in tiny.ops if op.kind == "all_reduce")
    values = dict(tiny.values)
    src = values[op.inputs[0]]
    values[op.inputs[0]] = replace(src, sbp=values[op.outputs[0]].sbp)  # B -> B "all_reduce"
    with pytest.raises(VerifyError):
        verify(replace(tiny, values=values))


def test_verifier_rejects_indivisible_splits(tiny):
    values = dict(tiny.values)
    w = values["block[0].attn.q.b"]
    values["block[0].attn.q.b"] = replace(w, type=replace(w.type, shape=(w.type.shape[0] - 1,)))
    with pytest.raises(VerifyError):
        verify(replace(tiny, values=values))


def test_malformed_ir_text_is_reported():
    with pytest.raises(IrSyntaxError, match="line 2"):
        parse_graph("graph g mesh(dp=2)\ninput %x f32[4]\n")
