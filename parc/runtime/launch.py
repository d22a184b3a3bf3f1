"""Launching a compiled program with torchrun: the launcher owns its ranks.

torchrun runs in a session of its own with PR_SET_PDEATHSIG (it dies with this process), and
every rank dies with torchrun and watches this process itself (watchdog.py), so no rank
outlives the launcher, however it ends. While the job runs the launcher follows
metrics.jsonl and the ranks' heartbeats; a stopped or hung rank (monitor.py) ends the job at
once, named. Ending a job kills every process under torchrun, then torchrun: a stopped rank
cannot run torchrun's SIGTERM handler, so waiting for a graceful exit would wait for the
collective timeout. SIGTERM, SIGHUP and Ctrl-C of the launcher end the job the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .checkpoint_meta import CheckpointError, find, inspect
from .failure import summary as failure_summary
from .failure import write_verdict
from .metrics import cut_back
from .monitor import find_hang, read_beats, signal_name
from .watchdog import child_dies_with_parent

__all__ = ["failure_summary", "launch", "rendezvous", "torchrun_command"]


def rendezvous(torchrun_args) -> list[str]:
    """`--standalone` unless torchrun's own flags say how the nodes meet."""
    return [] if any(a.startswith(("--nnodes", "--rdzv", "--master")) for a in
                     torchrun_args) else ["--standalone"]


def torchrun_command(program_dir: Path, nproc: int, args: list[str],
                     torchrun_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous(torchrun_args),
            f"--nproc_per_node={nproc}", "--max-restarts=0", *torchrun_args,
            str(program_dir / "main.py"), *args]


class Stopped(SystemExit):
    """The launcher got SIGTERM or SIGHUP: the job is ended and parc exits 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def launch(program_dir: Path, nproc: int, out: Path, steps: int,
           on_record: Callable[[dict], None], torchrun_args: list[str] | None = None,
           extra: list[str] | None = None, resume: bool = False) -> int:
    """Run the program; call `on_record` for each metrics line as it appears. Returns the
    exit status (non-zero when any rank failed or hung; `failure_summary(out)` says why)."""
    out.mkdir(parents=True, exist_ok=True)
    job = out / "job"
    job.mkdir(exist_ok=True)
    for old in job.iterdir():  # heartbeats and errors of an earlier run
        old.unlink(missing_ok=True)
    metrics = out / "metrics.jsonl"
    first = _resumed_step(program_dir) if resume else 0
    if first is None:  # the ranks will say what is wrong with the checkpoint
        seen = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    else:
        seen = cut_back(metrics, first)
    args = ["--steps", str(steps), "--out", str(out), *(["--resume"] if resume else []),
            *(extra or [])]
    command = torchrun_command(program_dir, nproc, args, torchrun_args or [])
    env = {**os.environ, "PARC_LAUNCHER_PID": str(os.getpid())}
    with open(out / "torchrun.log", "w") as log, _stop_on_signals():
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=child_dies_with_parent(), start_new_session=True)
        try:
            return _follow_job(process, job, metrics, seen, on_record)
        except BaseException as exc:
            if process.poll() is None:
                why = f"parc was stopped by {signal_name(exc.signum)}" if isinstance(
                    exc, Stopped) else "parc was interrupted"
                write_verdict(job, f"{why}; the job was ended")
            raise
        finally:
            end_job(process)


def _follow_job(process: subprocess.Popen, job: Path, metrics: Path, seen: int,
                on_record) -> int:
    check_at = time.monotonic() + 1.0
    while True:
        status = process.poll()
        seen = _follow(metrics, seen, on_record)
        if status is not None:
            _follow(metrics, seen, on_record)
            return status
        if time.monotonic() >= check_at:
            check_at = time.monotonic() + 1.0
            hang = find_hang(read_beats(job), time.time())
            if hang is not None:
                write_verdict(job, f"{hang.text}; the job was ended", hang.rank)
                end_job(process)
                return process.returncode or 1
        time.sleep(0.2)


def _resumed_step(program_dir: Path) -> int | None:
    """The step the newest checkpoint resumes from (None: none can be read)."""
    try:
        program = json.loads((program_dir / "plan.json").read_text())["program"]
        return inspect(find(program["train"]["checkpoint"]["dir"])).step
    except (OSError, ValueError, KeyError, TypeError, CheckpointError):
        return None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Stopped here, so that the job is ended before parc exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux: from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def end_job(process: subprocess.Popen) -> None:
    """Kill torchrun and everything under it now (stopped ranks too), and reap torchrun."""
    if process.poll() is not None:
        return
    for pid in _descendants(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


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
