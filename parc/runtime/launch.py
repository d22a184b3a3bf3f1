"""Launching a compiled program with torchrun, following its metrics as it trains."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .checkpoint_meta import CheckpointError, find, inspect
from .metrics import cut_back


def torchrun_command(program_dir: Path, nproc: int, args: list[str],
                     torchrun_args: list[str]) -> list[str]:
    rendezvous = [] if any(a.startswith(("--nnodes", "--rdzv", "--master")) for a in
                           torchrun_args) else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous,
            f"--nproc_per_node={nproc}", "--max-restarts=0", *torchrun_args,
            str(program_dir / "main.py"), *args]


def launch(program_dir: Path, nproc: int, out: Path, steps: int,
           on_record: Callable[[dict], None], torchrun_args: list[str] | None = None,
           extra: list[str] | None = None, resume: bool = False) -> int:
    """Run the program; call `on_record` for each metrics line as it appears. Returns the
    exit status (non-zero when any rank failed: torchrun then stops the others)."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    first = _resumed_step(program_dir) if resume else 0
    if first is None:  # the ranks will say what is wrong with the checkpoint
        seen = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    else:
        seen = cut_back(metrics, first)
    args = ["--steps", str(steps), "--out", str(out), *(["--resume"] if resume else []),
            *(extra or [])]
    command = torchrun_command(program_dir, nproc, args, torchrun_args or [])
    log = open(out / "torchrun.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            status = process.poll()
            seen = _follow(metrics, seen, on_record)
            if status is not None:
                _follow(metrics, seen, on_record)
                return status
            time.sleep(0.2)
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=30)
        raise
    finally:
        log.close()


def _resumed_step(program_dir: Path) -> int | None:
    """The step the newest checkpoint resumes from (None: none can be read)."""
    try:
        program = json.loads((program_dir / "plan.json").read_text())["program"]
        return inspect(find(program["train"]["checkpoint"]["dir"])).step
    except (OSError, ValueError, KeyError, TypeError, CheckpointError):
        return None


def _follow(path: Path, seen: int, on_record) -> int:
    if not path.exists():
        return seen
    lines = path.read_text().splitlines()
    for line in lines[seen:]:
        if line.strip():
            try:
                on_record(json.loads(line))
            except json.JSONDecodeError:
                return seen  # a line being written: read it next time
        seen += 1
    return seen


def failure_summary(out: Path, limit: int = 40) -> str:
    """The lines of the torchrun log that say which rank failed and why."""
    log = out / "torchrun.log"
    if not log.exists():
        return ""
    lines = [line for line in log.read_text().splitlines() if not line.startswith("W")]
    keep = [line for line in lines if "Error" in line or "error" in line or
            "Traceback" in line or "rank" in line.lower()]
    return "\n".join((keep or lines)[-limit:])
