"""`parc run` end to end, and a job hanging in its first step ends with the rank named
(tests/runtime/test_job.py: killed launchers, stopped, hung and failing ranks)."""

import json
import time
from pathlib import Path

import pytest

from parc.api import compile_program
from parc.cli import main
from parc.runtime.launch import failure_summary, launch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_parc_run_trains_and_writes_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(ROOT / "examples/gpt_tiny.par"), "--steps", "6", "--out",
                 str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(6))
    assert set(records[0]) == {"step", "loss", "step_s", "tokens_per_s"}
    assert records[-1]["loss"] < records[0]["loss"]
    assert (out / "program" / "main.py").exists()
    assert "metrics:" in capsys.readouterr().out


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
