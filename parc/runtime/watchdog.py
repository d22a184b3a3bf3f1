"""A rank's side of the job: it dies with its launcher and says where it is.

Every rank asks Linux to kill it when its parent (torchrun) exits (PR_SET_PDEATHSIG), and a
heartbeat thread checks twice a second that its parent is still the one it started under and
that the launcher named in PARC_LAUNCHER_PID is alive; if not, the rank exits. So killing
`parc run` by any signal ends every rank within a few seconds, whether torchrun got to stop
them or not.

The same thread writes the rank's heartbeat, `{time, step, action, since, limit,
stale_after}`, atomically to `OUT/job/rank<R>.json`: `action` is what the rank is doing
(`F1.3`, `waiting for recv act of microbatch 2 (stage 0->1)`, `checkpoint`, ...), `since`
when it last moved on, `limit` how long it may stay there before the launcher may call it
hung (none in the first step, which compiles kernels, and while checkpoints are read or
written), `stale_after` how old the heartbeat may grow before the rank counts as stopped. The
launcher (monitor.py) reads them.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
HEARTBEAT_S = 0.5


def stale_after_s() -> float:
    """A heartbeat older than this means the rank is stopped (PARC_STALE_S, 10 s)."""
    return float(os.environ.get("PARC_STALE_S", "10"))


def stuck_after_s() -> float:
    """No rank moving on for this long means the job hangs (PARC_STUCK_S, 20 s), or for
    three times the slowest step so far, if longer."""
    return float(os.environ.get("PARC_STUCK_S", "20"))


def _prctl() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent() -> bool:
    """Have Linux SIGKILL this process when its parent exits; False where it cannot."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0


def child_dies_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: the child gets PR_SET_PDEATHSIG before it execs, and exits
    at once if this process died before that. Prepared here, so that the child between fork
    and exec only makes one foreign call."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Heartbeat:
    """The watchdog thread of one rank (see the module's docstring)."""

    def __init__(self, rank: int, directory: str | Path | None, first_step_stale_s: float):
        self.rank = rank
        self.file = Path(directory) / f"rank{rank}.json" if directory is not None else None
        self.parent = os.getppid()
        launcher = os.environ.get("PARC_LAUNCHER_PID", "")
        self.launcher = int(launcher) if launcher.isdigit() else None
        # with NCCL the first step compiles kernels (Triton), which may hold the GIL
        self.first_step_stale_s = first_step_stale_s
        self.step: int | None = None
        self.first: int | None = None  # the first step of this run
        self.phase = "starting"
        self.executor = None  # its `at` is the index of the step it is in
        self.longest_step = 0.0
        self.since = time.time()
        self._position: tuple | None = None
        self._stop = threading.Event()
        self._writing = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="parc-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        if self._orphaned():  # the launcher died while this rank started
            self._leave()
        self._thread.start()
        return self

    def stop(self) -> None:
        """The rank is done: a last heartbeat says so (the launcher then leaves it be)."""
        self._stop.set()
        self._thread.join(timeout=2 * HEARTBEAT_S)
        self.phase = "done"
        self._write()

    def at(self, step: int | None, phase: str) -> None:
        """Where the training loop is: `phase` is "step" while the executor runs. A new step
        is written at once, so that a rank stopped between two beats is seen where it is."""
        if self.first is None and step is not None:
            self.first = step
        moved = step != self.step
        self.step, self.phase = step, phase
        if moved:
            self._write()

    def step_took(self, seconds: float) -> None:
        """A step's time (the first, which compiles kernels, does not count)."""
        if self.step != self.first:
            self.longest_step = max(self.longest_step, seconds)

    def action(self) -> str:
        executor = self.executor
        at = executor.at if executor is not None else -1  # read once: the loop moves on
        if self.phase != "step" or not 0 <= at < len(executor.steps):
            return self.phase
        kind, what = executor.steps[at]
        if kind == "run":
            op, stage, mb = what
            return f"{op}{stage}.{mb}"
        waits = "; ".join(f"{op} {k} of microbatch {mb} (stage {src}->{dst})"
                          for op, k, src, dst, mb in what)
        return f"waiting for {waits}" if len(waits) < 300 else f"waiting for {waits[:300]}..."

    def beat(self) -> dict:
        now = time.time()
        executor = self.executor
        position = (self.step, self.phase, executor.at if executor is not None else None)
        if position != self._position:
            self._position, self.since = position, now
        patient = self.phase in ("starting", "resume", "checkpoint") or self.step == self.first
        limit = None if patient else max(stuck_after_s(), 3 * self.longest_step)
        stale = stale_after_s()
        if self.step is None or self.step == self.first:
            stale = max(stale, self.first_step_stale_s)
        return {"rank": self.rank, "pid": os.getpid(), "time": now, "step": self.step,
                "action": self.action(), "since": self.since, "limit": limit,
                "stale_after": stale}

    def _orphaned(self) -> bool:
        if os.getppid() != self.parent:
            return True
        if self.launcher is None:
            return False
        if not _alive(self.launcher):
            return True
        # the launcher started torchrun, and torchrun this rank
        return _parent_of(self.parent) not in (None, self.launcher)

    def _leave(self) -> None:
        print(f"parc: rank {self.rank}: the launcher is gone; exiting", file=sys.stderr,
              flush=True)
        os._exit(1)

    def _write(self) -> None:
        if self.file is None:
            return
        with self._writing:  # the thread and the training loop both write
            try:
                tmp = self.file.with_name(f".{self.file.name}.tmp")
                tmp.write_text(json.dumps(self.beat()))
                os.replace(tmp, self.file)
            except Exception:
                pass  # a full disk, say: the watchdog goes on (a silent rank counts as stopped)

    def _run(self) -> None:
        while True:
            if self._orphaned():
                self._leave()
            self._write()
            if self._stop.wait(HEARTBEAT_S):
                return


BEAT: Heartbeat | None = None  # this process's heartbeat, once train() started it


def start(rank: int, directory: str | Path | None, first_step_stale_s: float = 0.0
          ) -> Heartbeat:
    """Die with the parent, watch the launcher, and beat into `directory` (None: no files).
    `first_step_stale_s`: how long a heartbeat may be silent before the first step is done
    (kernel compilation may hold the GIL)."""
    global BEAT
    die_with_parent()
    BEAT = Heartbeat(rank, directory, first_step_stale_s).start()
    return BEAT


def at(step: int | None, phase: str, executor=None) -> None:
    """Tell the heartbeat where the training loop is (nothing without one)."""
    if BEAT is not None:
        if executor is not None:
            BEAT.executor = executor
        BEAT.at(step, phase)


def step_took(seconds: float) -> None:
    if BEAT is not None:
        BEAT.step_took(seconds)
