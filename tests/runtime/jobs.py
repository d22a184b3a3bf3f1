"""A real job to inject faults into (tests/runtime/test_job.py, bench/job_faults.py): gpt_tiny
on two pipeline ranks under `parc run`, and what is left of it in /proc."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TWO = "hardware cpu2 = std.hw.cpu(devices = 2)"  # two pipeline ranks: half the start-up
PIPELINE = "parallel on cpu2 {\n  mesh (pp = 2)\n  stages auto\n  schedule 1f1b\n}"


def two_rank_spec(where: Path) -> Path:
    """gpt_tiny on two processes (stage 0 on rank 0, stage 1 on rank 1)."""
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("hardware cpu4 = std.hw.cpu(devices = 4)", TWO)
    path = where / "two.par"
    path.write_text(re.sub(r"parallel on cpu4 \{.*?\n\}", PIPELINE, text, flags=re.S))
    return path


def processes_of(out: Path) -> list[int]:
    """Live processes whose command line names `out` (parc, torchrun, the ranks)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes() and int(cmdline.parent.name) != \
                    os.getpid():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def kill_all(out: Path) -> None:
    for pid in processes_of(out):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def steps_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for_steps(out: Path, count: int, process=None, limit: float = 120) -> None:
    start = time.monotonic()
    while steps_done(out) < count:
        assert time.monotonic() - start < limit, "the job did not start training"
        assert process is None or process.poll() is None, "parc ended before training"
        time.sleep(0.2)


def parc_run(spec: Path, out: Path, steps: int = 5000) -> subprocess.Popen:
    """`parc run` in a session of its own (so that its whole group can be killed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "parc.cli", "run", str(spec), "--steps",
                             str(steps), "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def rank_pid(out: Path, rank: int) -> int:
    beat = json.loads((out / "job" / f"rank{rank}.json").read_text())
    return beat["pid"]
