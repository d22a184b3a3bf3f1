"""Why a job failed, said once: the root cause first, with its rank.

A rank that raises writes `OUT/job/rank<R>.error.json` (the exception, where it was raised,
the step and action) before it exits; the launcher writes `OUT/job/verdict.json` when it ends
a job itself (a stopped or hung rank, parc interrupted). When one rank fails the others
fail after it, mostly with communication errors (a peer closed the connection, a p2p group
timed out), so the root cause is the launcher's verdict, else the first error that is not a
communication error, else the first error. The full log stays in `OUT/torchrun.log`.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from pathlib import Path

from .monitor import read_beats

COMM_TYPES = {"P2PError", "DistBackendError", "DistNetworkError", "DistStoreError",
              "DistError"}
LIBRARIES = (str(Path(__file__).resolve().parents[1]), str(Path(json.__file__).parent))
COMM_WORDS = re.compile(r"Connection closed by peer|Connection reset|Broken pipe|timed out|"
                        r"Timed out|NCCL communicator|ProcessGroup.*abort", re.I)


def record(directory: str | Path, rank: int, exc: BaseException, step: int | None,
           action: str | None) -> None:
    """Write this rank's error where the launcher finds it (never raises)."""
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        inner = frames[-1] if frames else None
        # the innermost frame of the program itself (a stage), not of parc, torch or Python
        user = next((f for f in reversed(frames) if not f.filename.startswith(LIBRARIES)
                     and "site-packages" not in f.filename), inner)
        message = str(exc).strip()
        data = {"rank": rank, "pid": os.getpid(), "time": time.time(), "step": step,
                "action": action, "type": type(exc).__name__, "message": message[:2000],
                "where": f"{user.filename}:{user.lineno} in {user.name}" if user else None,
                "comm": type(exc).__name__ in COMM_TYPES or bool(COMM_WORDS.search(message))}
        path = Path(directory) / f"rank{rank}.error.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except Exception:
        pass  # the rank is failing already; its traceback is in the log


def write_verdict(directory: str | Path, text: str, rank: int | None = None) -> None:
    """The launcher's own reason for ending a job."""
    path = Path(directory) / "verdict.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"text": text, "rank": rank, "time": time.time()}))


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def summary(out: str | Path) -> str:
    """The root cause of a failed job in a few lines (the log's rank exits if nothing else
    was recorded)."""
    out = Path(out)
    job = out / "job"
    errors = sorted((e for e in (_read(p) for p in job.glob("rank*.error.json")) if e),
                    key=lambda e: e.get("time", 0))
    verdict = _read(job / "verdict.json")
    lines = []
    if verdict is not None:
        lines.append(verdict.get("text", "the launcher ended the job"))
    elif errors and all(e.get("comm") for e in errors) and _silent(job, errors):
        beat = _silent(job, errors)
        lines.append(f"rank {beat.rank} did not answer: it was still in step {beat.step}, "
                     f"{beat.action}, when the others gave up waiting for it")
        first = errors[0]
        lines.append(f"  rank {first['rank']}: {first['type']}: "
                     f"{(first.get('message') or '').splitlines()[0][:300]}")
    elif errors:
        root = next((e for e in errors if not e.get("comm")), errors[0])
        where = f" in step {root['step']}" if root.get("step") is not None else ""
        if root.get("action"):
            where += f", {root['action']}"
        message = root.get("message") or ""
        first = message.splitlines()[0] if message else ""
        lines.append(f"rank {root['rank']} failed{where}: {root['type']}"
                     f"{': ' + first[:500] if first else ''}")
        if root.get("where"):
            lines.append(f"  raised at {root['where']}")
        others = sorted({e["rank"] for e in errors if e is not root})
        if others:
            lines.append(f"  then rank{'s' if len(others) > 1 else ''} "
                         f"{', '.join(map(str, others))} stopped after it")
    else:
        lines += _exits(out / "torchrun.log")
    return "\n".join(lines)


def _silent(job: Path, errors: list[dict]):
    """The rank the others waited for when they all timed out: one that reported no error
    and was last seen computing, not waiting (the one in it longest)."""
    failed = {e.get("rank") for e in errors}
    busy = [b for b in read_beats(job).values()
            if b.rank not in failed and b.step is not None and not b.action.startswith("waiting")]
    return min(busy, key=lambda b: b.since) if busy else None


def _exits(log: Path) -> list[str]:
    """The rank torchrun saw fail first, for ranks that wrote no error file (they died
    before `train()` started, or by a signal), with the first exception in the log."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    found = re.search(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", text, re.S) \
        or re.search(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", text, re.S)
    if found is None:
        return ["the job failed before any rank reported an error"]
    rank, code = found.group(1), int(found.group(2))
    how = f"signal {-code}" if code < 0 else f"exit status {code}"
    raised = next((m.group(0) for m in re.finditer(
        r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt)\b.*$", text, re.M)
        if "ChildFailedError" not in m.group(0)), None)
    return [f"rank {rank} ended with {how}" + (f": {raised[:300]}" if raised else "")]
