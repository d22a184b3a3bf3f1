"""The real-text example end to end: a byte-level BPE trained on the Python standard library's
sources, token files in the nanoGPT layout, `parc run examples/gpt_stdlib.par` (shortened)
with its held-out loss falling, and `parc sample` writing code."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parc.cli import main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_stdlib_corpus_trains_and_samples(tmp_path, capsys):
    data = tmp_path / "stdlib"
    prepared = subprocess.run([sys.executable, str(ROOT / "examples/prepare_stdlib.py"),
                               "--files", "120", "--vocab", "1024", "--out", str(data)],
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    assert (data / "train.tokenizer.json").exists()
    text = (ROOT / "examples/gpt_stdlib.par").read_text()
    text = text.replace('"data/stdlib/', f'"{data}/').replace("vocab = 2048", "vocab = 1024")
    text = text.replace("steps 200", "steps 24").replace("eval_every 25", "eval_every 3")
    text = text.replace("warmup = 20", "warmup = 4").replace(
        '"../runs/gpt_stdlib/checkpoints"', f'"{tmp_path / "ck"}"').replace("every 100", "every 24")
    spec = tmp_path / "gpt_stdlib.par"
    spec.write_text(text)
    assert main(["check", str(spec)]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 8 and evals[-1] < evals[0] - 0.3  # the held-out loss falls
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "ck"), "--prompt", "def ", "--tokens", "20"]) == 0
    assert capsys.readouterr().out.startswith("def ")
