"""`parc run` end to end, and a job hanging in its first step ends with the rank named
(tests/runtime/test_job.py: killed launchers, stopped, hung and failing ranks)."""

import json
import math
import time
from pathlib import Path

import pytest

from parc.api import compile_program
from parc.cli import main
from parc.runtime.launch import failure_summary, launch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_parc_run_trains_and_writes_metrics(tmp_path, capsys):
    """A cosine schedule with warmup: every step's lr is the formula's; the metrics carry the
    gradient norm, MFU and every rank's peak memory, in metrics.jsonl and TensorBoard."""
    spec = tmp_path / "gpt.par"
    spec.write_text((ROOT / "examples/gpt_tiny.par").read_text().replace(
        "steps 20", "steps 20\n  lr_schedule cosine(warmup = 2, min_lr = 1e-4)"))
    out, board = tmp_path / "run", tmp_path / "board"
    assert main(["run", str(spec), "--steps", "6", "--out", str(out),
                 "--tensorboard", str(board)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(6))
    assert set(records[0]) == {"step", "loss", "lr", "grad_norm", "step_s", "tokens_per_s",
                               "mfu", "peak_mem_bytes"}
    lr, low = 1e-3, 1e-4  # the example's adamw(lr = 1e-3); decay over the 20 steps it sets
    for r in records:
        want = lr * (r["step"] + 1) / 2 if r["step"] < 2 else \
            low + 0.5 * (1 + math.cos(math.pi * (r["step"] - 2) / 18)) * (lr - low)
        assert r["lr"] == pytest.approx(want)
    assert records[-1]["loss"] < records[0]["loss"]
    assert all(r["grad_norm"] > 0 and 0 < r["mfu"] < 1 for r in records)
    assert len(records[0]["peak_mem_bytes"]) == 4 and min(records[0]["peak_mem_bytes"]) > 1e7
    assert (out / "program" / "main.py").exists()
    assert "metrics:" in capsys.readouterr().out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(board))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in records])
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx(
        [r["lr"] for r in records])


def _broken(tmp_path: Path, statement: str) -> Path:
    program = compile_program(ROOT / "examples/gpt_tiny.par", tmp_path / "program")
    stage = program / "stage_1.py"
    text = stage.read_text()
    marker = "    def forward(self"
    head, rest = text.split(marker, 1)
    signature, body = rest.split("\n", 1)
    stage.write_text(head + marker + signature + f"\n        {statement}\n" + body)
    return program


def test_a_hanging_rank_ends_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("PARC_TIMEOUT_S", "10")
    program = _broken(tmp_path, "import time; time.sleep(3600)")
    start = time.monotonic()
    status = launch(program, 4, tmp_path / "out", 2, lambda record: None)
    assert status != 0
    assert time.monotonic() - start < 60
    summary = failure_summary(tmp_path / "out")
    # the first step may wait (kernels compile): the p2p timeout ends it, and the summary
    # names the rank the others waited for
    assert summary.startswith(("rank 2 did not answer: it was still in step 0, F1.",
                               "rank 3 did not answer: it was still in step 0, F1.")), summary
    assert "timed out" in summary.lower() or "Timed out" in summary


def test_traced_run_reports_predicted_against_measured(tmp_path, capsys):
    trace = tmp_path / "trace"
    assert main(["run", str(ROOT / "examples/gpt_tiny.par"), "--steps", "3", "--out",
                 str(tmp_path / "run"), "--trace", str(trace)]) == 0
    events = json.loads((trace / "measured_trace.json").read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert len({e["tid"] for e in slices}) == 4  # every process
    assert len(slices) == 4 * 2 * 4  # each rank: F and B of 4 microbatches
    capsys.readouterr()
    assert main(["report", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "step time (ms)" in out and "stage 1 B (ms)" in out
    assert (trace / "timeline.svg").read_text().count("<svg") == 3
