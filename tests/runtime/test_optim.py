"""Learning-rate schedules and weight-decay exclusions."""

import math
from pathlib import Path

import pytest

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from parc.runtime import optim
from parc.runtime.programs import Program

ROOT = Path(__file__).resolve().parents[2]


def test_schedules_follow_their_formulas():
    cosine = {"kind": "cosine", "warmup": 10, "min_lr": 0.1, "decay_steps": 110}
    linear = dict(cosine, kind="linear")
    assert [optim.lr_at(cosine, 1.0, s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert optim.lr_at(cosine, 1.0, 60) == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi / 2))
                                                          * 0.9)
    assert optim.lr_at(linear, 1.0, 60) == pytest.approx(1.0 - 0.9 * 0.5)
    assert optim.lr_at(cosine, 1.0, 110) == optim.lr_at(cosine, 1.0, 500) == 0.1
    assert optim.lr_at({"kind": "constant", "warmup": 0, "min_lr": 0.0,
                        "decay_steps": 5}, 0.3, 99) == 0.3


def _program(tmp_path: Path, extra: str) -> Program:
    text = (ROOT / "examples/gpt_tiny.par").read_text().replace("steps 20", "steps 20" + extra)
    text = text.replace("std.hw.cpu(devices = 4)", "std.hw.cpu(devices = 1)")
    text = text.replace("mesh (pp = 2, dp = 2)", "mesh (pp = 1)").replace(
        "    tokens, targets: S(0)@dp          # the batch splits over dp; parameters stay "
        "whole (B)\n", "")
    directory = write_program(make_plan(check_text(text, "g.par")), tmp_path / "p", "g.par")
    return Program(directory, None)


def test_norms_biases_and_embeddings_are_not_decayed_by_default(tmp_path):
    program = _program(tmp_path, "")
    opt = optim.build(program)
    decayed, kept = (g["params"] for g in opt.param_groups)
    names = {id(t): n for n, ts in program.copies().items() for t in ts}
    assert opt.param_groups[0]["weight_decay"] == 0.01 and opt.param_groups[1]["weight_decay"] == 0
    assert {names[id(p)] for p in decayed} == {n for n in names.values() if n.endswith(".w") and
                                               ".ln" not in n}
    assert "embed.wte" in {names[id(p)] for p in kept}


def test_no_decay_patterns_replace_the_default(tmp_path):
    program = _program(tmp_path, '\n  no_decay "*.b"')
    decayed, kept = (g["params"] for g in optim.build(program).param_groups)
    names = {id(t): n for n, ts in program.copies().items() for t in ts}
    assert {names[id(p)] for p in kept} == {n for n in names.values() if n.endswith(".b")}
    with pytest.raises(ParcError, match=r"`no_decay`: `\*\.bias` matches no parameter"):
        _program(tmp_path, '\n  no_decay "*.bias"')
    with pytest.raises(ParcError, match="`min_lr` 0.01 is above the learning rate"):
        _program(tmp_path, "\n  lr_schedule cosine(warmup = 1, min_lr = 1e-2)")
