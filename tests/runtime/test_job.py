"""The launcher owns its ranks: killed by any signal, no rank outlives it; a stopped or hung
rank is found and named within 30 s; a failed job says its root cause once."""

import os
import signal
import time
from pathlib import Path

import pytest

from parc.cli import main

from .jobs import (
    kill_all,
    parc_run,
    processes_of,
    rank_pid,
    steps_done,
    two_rank_spec,
    wait_for_steps,
)

pytestmark = pytest.mark.slow
SPEC = Path(__file__).resolve().parents[2] / "examples/gpt_tiny.par"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    return two_rank_spec(tmp_path_factory.mktemp("spec"))


@pytest.mark.parametrize("how", ["SIGKILL of parc", "SIGKILL of its process group",
                                 "SIGTERM of parc"])
def test_killing_the_launcher_ends_every_rank(two_ranks, tmp_path, how):
    out = tmp_path / "run"
    process = parc_run(two_ranks, out)
    try:
        wait_for_steps(out, 2, process)
        assert len(processes_of(out)) == 4  # parc, torchrun, two ranks
        killed = time.monotonic()
        if how == "SIGKILL of its process group":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            os.kill(process.pid, signal.SIGKILL if how.startswith("SIGKILL") else
                    signal.SIGTERM)
        while processes_of(out) and time.monotonic() - killed < 30:
            time.sleep(0.1)
        seconds = time.monotonic() - killed
        assert processes_of(out) == [], f"ranks outlived the launcher ({how})"
        assert seconds < 5, f"the ranks took {seconds:.1f} s to end"
        process.wait(timeout=10)
        if how == "SIGTERM of parc":
            assert process.returncode == 128 + signal.SIGTERM
        done = steps_done(out)
        time.sleep(1.5)
        assert steps_done(out) == done  # nobody trains on
    finally:
        kill_all(out)
        process.kill()
        process.wait()


def test_a_stopped_rank_is_named_within_30_s(two_ranks, tmp_path):
    out = tmp_path / "run"
    process = parc_run(two_ranks, out)
    try:
        wait_for_steps(out, 5, process)
        os.kill(rank_pid(out, 1), signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = process.communicate(timeout=60)
        seconds = time.monotonic() - stopped
        assert process.returncode == 1
        assert seconds < 30, f"{seconds:.1f} s to end the job"
        first = err.splitlines()[0]
        assert first.startswith("parc run: rank 1 (pid ") and "is stopped" in first
        assert "it was last in step " in first and "Traceback" not in err
        assert processes_of(out) == []
    finally:
        kill_all(out)
        process.kill()
        process.wait()


def _break_stage(monkeypatch, statement: str) -> None:
    """Compile as usual, then put `statement` at the top of stage 1's forward (the stage
    class comes last in its file, after the classes of its def calls)."""
    from parc.compiler.codegen import program as codegen

    write = codegen.write_program

    def broken(*args, **kwargs):
        directory = write(*args, **kwargs)
        stage = directory / "stage_1.py"
        head, rest = stage.read_text().rsplit("    def forward(self", 1)
        signature, body = rest.split("\n", 1)
        stage.write_text(f"{head}    def forward(self{signature}\n        {statement}\n{body}")
        return directory

    monkeypatch.setattr(codegen, "write_program", broken)


def test_a_rank_hung_after_the_first_step_is_named(two_ranks, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PARC_STUCK_S", "6")
    # four microbatches a step: hang in the forward of the third step
    _break_stage(monkeypatch, "globals()['_n'] = globals().get('_n', 0) + 1; "
                 "__import__('time').sleep(3600 if _n > 8 else 0)")
    out = tmp_path / "run"
    start = time.monotonic()
    assert main(["run", str(two_ranks), "--steps", "50", "--out", str(out)]) == 1
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("parc run: rank 1 (pid ")
    assert "hangs: no progress for" in first and "step 2, F1." in first
    assert "rank 0 was waiting" in first and "Traceback" not in err
    assert processes_of(out) == []


def test_a_failing_job_says_its_root_cause_once(tmp_path, monkeypatch, capsys):
    _break_stage(monkeypatch, "raise RuntimeError('stage one exploded')")
    out = tmp_path / "run"
    start = time.monotonic()
    assert main(["run", str(SPEC), "--steps", "3", "--out", str(out)]) == 1
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith(("parc run: rank 2 failed in step 0, F1.0: RuntimeError: stage "
                                "one exploded", "parc run: rank 3 failed in step 0, F1.0"))
    assert "raised at " in lines[1] and "stage_1.py" in lines[1]
    assert err.count("stage one exploded") == 1
    assert "Traceback" not in err and "torch.distributed.elastic" not in err
    assert lines[-1].endswith("full log in " + str(out / "torchrun.log"))
    assert (out / "torchrun.log").read_text().count("stage one exploded") >= 2  # kept on disk
