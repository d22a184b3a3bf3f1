"""The launcher's view of its ranks: their heartbeats (watchdog.py), and a hung job found.

A rank whose heartbeat is older than it allowed (`stale_after`) is stopped: SIGSTOP, a
debugger, a thread holding the GIL in C. A job where no rank has moved on for longer than
each allowed (`limit`; none in the first step or while checkpointing) hangs: the rank to
blame is the one that stopped moving first, preferring one that was computing over those
waiting for a message. Either way the launcher ends the job and names the rank, its step
and action.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Beat:
    rank: int
    pid: int
    time: float
    step: int | None
    action: str
    since: float
    limit: float | None
    stale_after: float


@dataclass(frozen=True, kw_only=True)
class Hang:
    rank: int
    pid: int
    text: str  # what the launcher says, naming the rank, step and action


def read_beats(directory: str | Path) -> dict[int, Beat]:
    beats = {}
    for path in Path(directory).glob("rank*.json"):
        if path.name.endswith(".error.json"):
            continue
        try:
            data = json.loads(path.read_text())
            beat = Beat(rank=int(data["rank"]), pid=int(data["pid"]), time=float(data["time"]),
                        step=data["step"], action=str(data["action"]),
                        since=float(data["since"]), limit=data["limit"],
                        stale_after=float(data["stale_after"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced, or not a heartbeat
        beats[beat.rank] = beat
    return beats


def _state(pid: int) -> str | None:
    """The process's state letter in /proc (T: stopped, Z: a zombie), None when it is gone,
    "?" where there is no /proc."""
    if not Path("/proc/self/stat").exists():
        return "?"
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _where(beat: Beat) -> str:
    step = f"step {beat.step}" if beat.step is not None else "before the first step"
    return f"{step}, {beat.action}"


def find_hang(beats: dict[int, Beat], now: float) -> Hang | None:
    """A stopped rank, or the rank a hung job waits on; None while the job moves. Ranks that
    are done, or gone (torchrun reports how they ended), are left out."""
    beats = {r: b for r, b in beats.items() if b.action != "done"
             and _state(b.pid) not in (None, "Z", "X")}
    stale = [b for b in beats.values() if now - b.time > b.stale_after]
    if stale:
        beat = min(stale, key=lambda b: b.time)
        how = "is stopped (SIGSTOP or a debugger)" if _state(beat.pid) in ("T", "t") else \
            "stopped answering"
        return Hang(rank=beat.rank, pid=beat.pid,
                    text=f"rank {beat.rank} (pid {beat.pid}) {how}: no heartbeat for "
                    f"{now - beat.time:.0f} s; it was last in {_where(beat)}")
    if not beats or any(b.limit is None or now - b.since <= b.limit for b in beats.values()):
        return None
    beat = min(beats.values(), key=lambda b: (b.action.startswith("waiting"), b.since))
    waiting = sorted(r for r in beats if r != beat.rank)
    return Hang(rank=beat.rank, pid=beat.pid,
                text=f"rank {beat.rank} (pid {beat.pid}) hangs: no progress for "
                f"{now - beat.since:.0f} s in {_where(beat)}"
                + (f"; rank{'s' if len(waiting) > 1 else ''} {', '.join(map(str, waiting))} "
                   f"{'were' if len(waiting) > 1 else 'was'} waiting" if waiting else ""))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
