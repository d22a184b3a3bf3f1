"""Checkpoints: a run stopped after step k and resumed follows the uninterrupted run's loss
curve, dropout masks included, also when the resumed plan differs (pp=4 -> dp=2 x tp=2);
interrupted saves are never loaded."""

import json
import re
from pathlib import Path

import pytest

from parc.cli import main
from parc.runtime import checkpoint

from ..contract.harness import GPT_TP

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def spec(tmp: Path, name: str, parallel: str, ckpt: Path) -> Path:
    """gpt_tiny with dropout: a resumed run must draw the masks the uninterrupted one drew."""
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("steps 20", f'steps 6\n  checkpoint every 3 to "{ckpt}"')
    text = text.replace("embed(tokens, vocab, d)", "embed(tokens, vocab, d, 0.1)")
    text = text.replace("block(x, heads)", "block(x, heads, 0.1)")
    assert text.count("0.1)") == 2
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", parallel, text, flags=re.S)
    path = tmp / f"{name}.par"
    path.write_text(text)
    return path


def losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


PP4 = "parallel on cpu4 {\n  mesh (pp = 4)\n  stages auto\n  schedule 1f1b\n}"
DP2_TP2 = "parallel on cpu4 {\n  mesh (dp = 2, tp = 2)\n  sbp {\n" + GPT_TP + "\n  }\n}"


def test_resume_and_reshard(tmp_path, capsys):
    whole = spec(tmp_path, "whole", PP4, tmp_path / "ck_whole")
    assert main(["run", str(whole), "--out", str(tmp_path / "whole")]) == 0
    reference = losses(tmp_path / "whole")
    assert len(reference) == 6

    first = spec(tmp_path, "first", PP4, tmp_path / "ck")
    # steps 3 and 4 are recorded past the newest checkpoint (step_3): as after a crash
    assert main(["run", str(first), "--steps", "5", "--out", str(tmp_path / "a")]) == 0
    assert checkpoint.latest(tmp_path / "ck").name == "step_3"
    (tmp_path / "ck" / "step_6.tmp").mkdir()  # a save that was killed half way
    assert checkpoint.latest(tmp_path / "ck").name == "step_3"

    assert main(["run", str(first), "--out", str(tmp_path / "a"), "--resume"]) == 0
    assert "resuming after step 3" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(6))  # every step once
    resumed = losses(tmp_path / "a")
    assert resumed == pytest.approx(reference, rel=1e-5)

    other = spec(tmp_path, "other", DP2_TP2, tmp_path / "ck")
    (tmp_path / "ck" / "latest").write_text("step_3")  # resume the pp=4 checkpoint again
    assert main(["run", str(other), "--out", str(tmp_path / "b"), "--resume"]) == 0
    resharded = losses(tmp_path / "b")
    assert resharded == pytest.approx(reference[3:], rel=1e-4)


def test_resume_without_checkpoints_is_an_error(tmp_path, capsys):
    plain = tmp_path / "plain.par"
    plain.write_text((ROOT / "examples/gpt_tiny.par").read_text())
    assert main(["run", str(plain), "--resume"]) == 1
    assert "error[E390]" in capsys.readouterr().err


def test_export_and_import_again(tmp_path, capsys):
    import torch

    from parc.dsl.check import check_file

    first = spec(tmp_path, "first", PP4, tmp_path / "ck")
    assert main(["run", str(first), "--steps", "3", "--out", str(tmp_path / "a")]) == 0
    out = tmp_path / "exported.pt"
    assert main(["export", str(tmp_path / "ck"), "-o", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    params = {p.name: p.type for p in check_file(first).model.params}
    assert set(state) == set(params)
    assert tuple(state["block[1].mlp.fc1.w"].shape) == (32, 128)
    again = first.read_text().replace("steps 6", f'steps 6\n  init "{out}"')
    second = tmp_path / "again.par"
    second.write_text(again)
    assert main(["check", "-q", str(second)]) == 0
