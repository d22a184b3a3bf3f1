"""Evaluation: `eval_every` in training reports the held-out loss; `parc eval` of the
checkpoint gives the trainer's own figure; `parc sample` writes text from it."""

import json
from pathlib import Path

import pytest

from parc.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


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
