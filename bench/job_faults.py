"""Fault injection on a real job: how long ranks outlive a killed launcher, and how long a
stopped rank takes to be found and named.

    python bench/job_faults.py [--repeat 3] [--out runs/bench/job_faults.json]

Each trial starts `parc run` (examples/gpt_tiny.par on two pipeline ranks) in a session of
its own, waits for training, then either signals the launcher (SIGKILL of parc, SIGKILL of
its process group, SIGTERM, SIGHUP, SIGINT) and times until no process of the job is left,
or SIGSTOPs rank 1 and times until `parc run` exits, checking that its first line names the
stopped rank.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.runtime.jobs import (  # noqa: E402
    kill_all,
    parc_run,
    processes_of,
    rank_pid,
    two_rank_spec,
    wait_for_steps,
)

KILLS = {"SIGKILL of parc": (signal.SIGKILL, False), "SIGKILL of its group": (signal.SIGKILL, True),
         "SIGTERM of parc": (signal.SIGTERM, False), "SIGHUP of parc": (signal.SIGHUP, False),
         "SIGINT of parc (Ctrl-C)": (signal.SIGINT, False)}


def start(spec: Path, out: Path):
    job = parc_run(spec, out, steps=100000)
    wait_for_steps(out, 3, job, limit=180)
    return job


def kill_trial(spec: Path, out: Path, sig: int, group: bool) -> float:
    job = start(spec, out)
    try:
        killed = time.monotonic()
        if group:
            os.killpg(job.pid, sig)
        else:
            job.send_signal(sig)
        while processes_of(out) and time.monotonic() - killed < 60:
            time.sleep(0.05)
        return time.monotonic() - killed
    finally:
        kill_all(out)
        job.wait()


def stop_trial(spec: Path, out: Path) -> tuple[float, bool]:
    job = start(spec, out)
    try:
        pid = rank_pid(out, 1)
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        _, err = job.communicate(timeout=120)
        seconds = time.monotonic() - stopped
        first = next((line for line in err.splitlines() if line.strip()), "")
        return seconds, "rank 1" in first
    finally:
        kill_all(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="runs/bench/job_faults.json")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = two_rank_spec(tmp)
        for k in range(args.repeat):
            for name, (sig, group) in KILLS.items():
                seconds = kill_trial(spec, tmp / f"kill{k}_{sig}_{group}", sig, group)
                rows.setdefault(name, []).append(seconds)
            seconds, named = stop_trial(spec, tmp / f"stop{k}")
            rows.setdefault("SIGSTOP of rank 1: job ended", []).append(seconds)
            rows.setdefault("  its first line names rank 1", []).append(float(named))
    print(f"{'fault':34s} {'median s':>9s} {'max s':>7s}  trials")
    for name, values in rows.items():
        print(f"{name:34s} {statistics.median(values):9.2f} {max(values):7.2f}  {len(values)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"repeat": args.repeat, "seconds": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
