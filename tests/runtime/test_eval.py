"""Evaluation: `eval_every` in training reports the held-out loss; `parc eval` of the
checkpoint gives the trainer's own figure; `parc sample` writes text from it; `parc eval
--skip` gives the loss of the model without the skipped stages' layers."""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from parc import inference
from parc.cli import main
from parc.inference import Loaded, evaluate, skipped_stages
from parc.runtime.checkpoint import export

from .serial import serial_program

ROOT = Path(__file__).resolve().parents[2]
SKIP = ROOT / "examples" / "gpt_skip.par"  # pp = 4: stages of blocks 0-1, 2-3, 4-5, 6-7


@pytest.mark.slow
def test_eval_sample_and_the_trainers_own_loss(tmp_path, capsys):
    data = ROOT / "examples" / "data" / "pipelines.bin"
    text = (ROOT / "examples/gpt_text.par").read_text().replace(
        "steps 60", f'steps 6\n  eval_every 3\n  eval_batches 2\n  checkpoint every 3 to '
        f'"{tmp_path / "ck"}"').replace('"data/pipelines.bin"', f'"{data}"')
    spec = tmp_path / "text.par"
    spec.write_text(text)
    assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    evals = [r.get("eval_loss") for r in records]
    assert evals[2] is not None and evals[5] is not None
    assert [e is None for e in evals] == [True, True, False, True, True, False]
    capsys.readouterr()
    assert main(["eval", str(spec), "--checkpoint", str(tmp_path / "ck")]) == 0
    line = capsys.readouterr().out
    loss = float(line.split()[1])
    assert loss == pytest.approx(evals[5], abs=1e-4)  # the latest checkpoint: step 6
    assert "perplexity" in line
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "The pipeline", "--tokens", "40",
                 "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("The pipeline") and len(first) == len("The pipeline") + 40 + 1
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "The pipeline", "--tokens", "40",
                 "--seed", "3"]) == 0
    assert capsys.readouterr().out == first  # seeded
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "The", "--tokens", "5",
                 "--temperature", "0"]) == 0
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "\u00e9\u00e9", "--tokens", "5"]) == 1
    assert "characters the model never saw" in capsys.readouterr().err


# ---- parc eval --skip ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def skip_checkpoint(tmp_path_factory):
    """A checkpoint of gpt_skip's model: 2 steps in this process (the weights are what
    matter, not the plan that trained them)."""
    from parc.runtime.programs import Program
    from parc.runtime.train import run_steps

    where = tmp_path_factory.mktemp("skip")
    program = serial_program("gpt_skip.par", where, f'checkpoint every 2 to "{where / "ck"}"')
    run_steps(Program(program, None), 2)
    return where / "ck"


def without_blocks(checkpoint: Path, dropped: set[int], where: Path) -> Loaded:
    """The model with fewer layers, each block holding the checkpoint's block it stands for
    once the `dropped` blocks are gone: what skipping their stage must compute."""
    kept = [i for i in range(8) if i not in dropped]
    spec = where / f"without_{'_'.join(map(str, sorted(dropped)))}.par"
    spec.write_text(SKIP.read_text().replace("layers = 8", f"layers = {len(kept)}"))
    model = Loaded(checkpoint, spec)
    weights = export(checkpoint)
    with torch.no_grad():
        for name, copies in model.program.copies().items():
            source = re.sub(r"^block\[(\d+)\]", lambda m: f"block[{kept[int(m[1])]}]", name)
            for tensor in copies:
                tensor.copy_(weights[source])
    return model


def test_eval_of_the_kept_stages_with_none_skipped_is_the_full_eval(skip_checkpoint, capsys):
    full = evaluate(Loaded(skip_checkpoint, SKIP), None, 2)
    staged = Loaded(skip_checkpoint, SKIP, skip_ratio=0.0)  # the plan's 4 stages, all kept
    assert staged.skipped == () and len(staged.program.modules) == 4
    assert evaluate(staged, None, 2) == pytest.approx(full, abs=1e-6)
    assert main(["eval", str(SKIP), "--checkpoint", str(skip_checkpoint), "--batches", "2",
                 "--skip-ratio", "0"]) == 0
    assert capsys.readouterr().out == (f"loss {full:.4f}  perplexity "
                                       f"{math.exp(full):.2f}\nskipped no stage "
                                       "(of 4)\n")


def test_skipping_a_stage_is_the_model_without_its_layers(skip_checkpoint, tmp_path, capsys):
    full = evaluate(Loaded(skip_checkpoint, SKIP), None, 2)
    gen = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(0, 64, (2, 16), generator=gen),
             "targets": torch.randint(0, 64, (2, 16), generator=gen)}
    losses = {}
    for stage, blocks in ((1, {2, 3}), (2, {4, 5})):
        skipping = Loaded(skip_checkpoint, SKIP, skip=[stage])
        assert skipping.units[stage] == [f"block[{b}]" for b in sorted(blocks)]
        smaller = without_blocks(skip_checkpoint, blocks, tmp_path)
        losses[stage] = evaluate(skipping, None, 2)
        assert losses[stage] == pytest.approx(evaluate(smaller, None, 2), abs=1e-5)
        assert float(skipping.forward(batch)) == pytest.approx(float(smaller.forward(batch)),
                                                               abs=1e-5)
        assert abs(losses[stage] - full) > 1e-3  # the skip is no rounding of the full model
        assert main(["eval", str(SKIP), "--checkpoint", str(skip_checkpoint), "--batches", "2",
                     "--skip", str(stage)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"loss {losses[stage]:.4f}  perplexity ")
        first, last = sorted(blocks)
        assert lines[1] == f"skipped stage {stage} of 4 (block[{first}] .. block[{last}])"
    assert abs(losses[1] - losses[2]) > 1e-3  # the stage named is the stage skipped
    assert main(["eval", str(SKIP), "--checkpoint", str(skip_checkpoint), "--batches", "2",
                 "--skip-ratio", "0.5"]) == 0  # one of the 2 middle stages: the second
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"loss {losses[2]:.4f}  perplexity {math.exp(losses[2]):.2f}",
                     "skipped stage 2 of 4 (block[4] .. block[5])"]


@pytest.mark.parametrize("num, ratio, chosen", [(8, 0.5, (2, 4, 6)), (8, 0.0, ()),
                                                (4, 0.5, (2,)), (4, 0.25, (2,)),
                                                (4, 0.9, (1, 2)), (6, 0.5, (2, 4)),
                                                (3, 0.5, (1,))])
def test_skip_ratio_spreads_the_skipped_stages_evenly(num, ratio, chosen):
    plan = SimpleNamespace(stages=[SimpleNamespace(units=[f"u{i}"]) for i in range(num)])
    assert skipped_stages(plan, ratio=ratio) == chosen


WIDE = SKIP.read_text().replace("use std.gpt", "use std.gpt\nuse std.nn").replace(
    """  for i in 0..layers {
    x = block(x, heads)
  }
""", """  x = block(x, heads) as b0
  x = linear(x, 2 * d) as wide
  x = block(x, heads) as b1
  x = linear(x, d) as narrow
""").replace("  stages auto\n", """  stage 0 = embed, b0
  stage 1 = wide
  stage 2 = b1
  stage 3 = narrow, lm_loss
""").replace("schedule skip(ratio = 0.25, seed = 0)", "schedule gpipe")


@pytest.mark.parametrize("spec, flags, code, message", [
    pytest.param(None, ["--skip", "0"], "E388",
                 "--skip 0: stage 0 is the first stage, which reads the inputs (embed .. "
                 "block[1]): it is never skipped", id="first"),
    pytest.param(None, ["--skip", "1,3"], "E388",
                 "--skip 3: stage 3 is the last stage, which computes the loss (block[6] .. "
                 "lm_loss)", id="last"),
    pytest.param(None, ["--skip", "4"], "E388", "--skip 4: the plan has 4 stages, 0 .. 3",
                 id="out-of-range"),
    pytest.param(None, ["--skip", ","], "E388",
                 "--skip ',': expected stage indices separated by commas", id="empty"),
    pytest.param(None, ["--skip", "one"], "E388",
                 "--skip 'one': expected stage indices separated by commas", id="not-a-number"),
    pytest.param(None, ["--skip", "\u00b2"], "E388",
                 "--skip '\u00b2': expected stage indices separated by commas",
                 id="superscript-digit"),
    pytest.param(None, ["--skip-ratio", "1"], "E388",
                 "--skip-ratio 1: expected a ratio with 0 <= R < 1", id="ratio"),
    pytest.param("gpt_stages.par", ["--skip", "1"], "E388",
                 "--skip: the plan has 2 stages, and the first", id="two-stages"),
    pytest.param("gpt_stages.par", ["--skip-ratio", "0.5"], "E388",
                 "--skip-ratio: the plan has 2 stages", id="two-stages-ratio"),
    pytest.param("wide", ["--skip", "1"], "E336",
                 "--skip: a path goes from stage 0 to stage 2, but stage 0 sends f32[batch, "
                 "16, 32] and stage 2 takes f32[batch, 16, 64]", id="layouts-differ"),
])
def test_a_skip_that_cannot_run_is_refused_before_any_work(spec, flags, code, message,
                                                           skip_checkpoint, tmp_path, capsys,
                                                           monkeypatch):
    if spec == "wide":
        path = tmp_path / "wide.par"
        path.write_text(WIDE)
    else:
        path = ROOT / "examples" / spec if spec else SKIP

    def no_work(*args, **kwargs):
        raise AssertionError("the program was written before the skip was checked")

    monkeypatch.setattr(inference, "write_program", no_work)
    assert main(["eval", str(path), "--checkpoint", str(skip_checkpoint), *flags]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert f"error[{code}]: {message}" in out.err and "Traceback" not in out.err


def test_skip_and_skip_ratio_exclude_each_other(skip_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", str(SKIP), "--checkpoint", str(skip_checkpoint), "--skip", "1",
              "--skip-ratio", "0.5"])
    assert exit_.value.code == 2
    assert "not allowed with argument --skip" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (("layers = 8", "layers = 10"), "holds no parameter `block[8]"),
    (("d = 32", "d = 48"), "holds `embed.wte` of shape [64, 32] but"),
])
def test_a_spec_of_another_model_is_refused_not_a_traceback(change, message, skip_checkpoint,
                                                            tmp_path, capsys):
    path = tmp_path / "other.par"
    path.write_text(SKIP.read_text().replace(*change))
    assert main(["eval", str(path), "--checkpoint", str(skip_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "error[E386]" in err and message in err and "Traceback" not in err
