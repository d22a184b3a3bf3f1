"""Inputs are filled from one token stream: a declared `= next(tokens)` is the same sequences
one position on, whatever its name; every other integer input is the tokens themselves."""

import pytest
import torch

from parc.compiler.codegen.program import program_json
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from parc.runtime.data import Data

SPEC = """
use std.gpt
use std.hw
hardware one = std.hw.cpu(devices = 1)
model gpt(vocab = 32, d = 16, heads = 2, layers = 1, seq = 8) {
  input ids: i64[batch, seq]
  input NEXTS
  x, wte = embed(ids, vocab, d)
  x = block(x, heads)
  loss = lm_loss(x, wte, nexts)
  output loss
}
train { batch 4 }
parallel on one { mesh (pp = 1) }
"""


def batch_of(declaration: str) -> dict[str, torch.Tensor]:
    spec = check_text(SPEC.replace("NEXTS", declaration), "data.par")
    plan = make_plan(spec)
    inputs = program_json(plan, [])["inputs"]
    return Data("synthetic", 0, inputs, 4).global_batch(step=3)


def test_declared_next_tokens_are_the_inputs_shifted_by_one():
    batch = batch_of("nexts: i64[batch, seq] = next(ids)")
    ids, nexts = batch["ids"], batch["nexts"]
    assert torch.equal(ids[:, 1:], nexts[:, :-1])
    assert not torch.equal(ids, nexts)


def test_targets_equal_to_the_inputs_are_refused():
    with pytest.raises(ParcError) as exc:
        batch_of("nexts: i64[batch, seq]")
    assert exc.value.diagnostics[0].code == "E173"
    assert "= next(ids)" in exc.value.diagnostics[0].help


def test_token_range_is_found_through_communication():
    """Targets that reach the loss through a slice (here: replicated, with the logits split by
    batch) still draw tokens over the whole vocabulary, as in the reference; the range was
    read off the loss operand itself and fell back to two tokens."""
    text = (SPEC.replace("NEXTS", "nexts: i64[batch, seq] = next(ids)")
            .replace("std.hw.cpu(devices = 1)", "std.hw.cpu(devices = 2)")
            .replace("{ mesh (pp = 1) }", "{\n  mesh (dp = 2)\n  sbp { ids: S(0)@dp }\n}"))
    plan = make_plan(check_text(text, "range.par"))
    assert any(op.kind == "slice" and op.inputs == ("nexts",) for op in plan.graph.ops)
    inputs = program_json(plan, [])["inputs"]
    assert inputs["nexts"]["high"] == inputs["ids"]["high"] == 32
