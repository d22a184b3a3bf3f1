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


def test_a_rank_reads_only_its_rows_and_they_are_the_references(monkeypatch):
    """dp = 2 and 2 microbatches of a batch of 8: rank 1 of microbatch 1 makes rows 6 and 7
    alone, and they equal rows 6 and 7 of the whole batch the reference makes."""
    from parc.runtime import data as data_module

    inputs = {"ids": {"dtype": "i64", "shape": [8, 5], "high": 32, "next_of": None,
                      "splits": [("dp", 0)]},
              "nexts": {"dtype": "i64", "shape": [8, 5], "high": 32, "next_of": "ids",
                        "splits": [("dp", 0)]}}
    made = []
    real = data_module.synthetic_sequences
    monkeypatch.setattr(data_module, "synthetic_sequences",
                        lambda seed, step, rows, *a: made.append(list(rows)) or
                        real(seed, step, rows, *a))
    data = Data("synthetic", 3, inputs, 8)
    mine = data.local(5, "ids", 1, 2, [(0, 2, 1)])
    assert made == [[6, 7]]
    whole = Data("synthetic", 3, inputs, 8).global_batch(5)
    assert torch.equal(mine, whole["ids"][6:8])
    assert torch.equal(data.local(5, "nexts", 1, 2, [(0, 2, 1)]), whole["nexts"][6:8])
    assert made == [[6, 7], list(range(8))]  # the second input came from the same rows


def test_ignored_targets_leave_the_mean_of_the_others(tmp_path):
    """One process: the loss is the mean cross-entropy over the targets that are not the
    padding id, per microbatch."""
    import torch.nn.functional as F  # noqa: N812

    from parc.compiler.codegen.program import write_program
    from parc.runtime.programs import Program

    text = SPEC.replace("NEXTS", "nexts: i64[batch, seq] = next(ids)").replace(
        "lm_loss(x, wte, nexts)", "lm_loss(x, wte, nexts, 5)")
    program = Program(write_program(make_plan(check_text(text, "ig.par")), tmp_path / "p",
                                    "ig.par"), None)
    from parc.runtime.executor import Executor

    executor = Executor(program.spec, program.modules, None, torch.device("cpu"))
    data = Data("synthetic", 0, program.spec["inputs"], 4)
    (loss,) = executor.evaluate(data, 0, program.data_splits)
    batch = data.global_batch(0)
    captured = []
    real = F.cross_entropy
    F.cross_entropy = lambda logits, t, **kw: captured.append((logits, t)) or real(logits, t, **kw)
    try:
        executor.evaluate(data, 0, program.data_splits)
    finally:
        F.cross_entropy = real
    logits, targets = captured[0]
    keep = targets != 5
    assert (~keep).any() and keep.any()
    want = real(logits[keep], targets[keep])
    torch.testing.assert_close(loss, want)
    assert torch.equal(targets.view(4, 8), batch["nexts"])
