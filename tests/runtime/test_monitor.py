"""The launcher's judgement from heartbeats and error files (no job launched here)."""

import json
import os
import signal
import subprocess
import time

from parc.runtime.failure import summary, write_verdict
from parc.runtime.monitor import Beat, find_hang


def beat(rank: int, pid: int, now: float, action: str = "F1.0", age: float = 0.2,
         still: float = 1.0, limit: float | None = 20.0, step: int | None = 3) -> Beat:
    return Beat(rank=rank, pid=pid, time=now - age, step=step, action=action,
                since=now - still, limit=limit, stale_after=10.0)


def test_a_moving_job_is_left_alone():
    now = time.time()
    me = os.getpid()
    assert find_hang({r: beat(r, me, now) for r in range(4)}, now) is None
    first = {r: beat(r, me, now, still=500, limit=None, step=0) for r in range(4)}
    assert find_hang(first, now) is None  # the first step may take its time
    gone = {0: beat(0, 2 ** 22 + 12345, now, age=60), 1: beat(1, me, now, action="done",
                                                               age=60)}
    assert find_hang(gone, now) is None  # ended ranks are torchrun's to report


def test_a_stopped_rank_is_named():
    child = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.2)
        now = time.time()
        beats = {0: beat(0, os.getpid(), now, action="waiting for recv act of microbatch 1"),
                 3: beat(3, child.pid, now, action="B1.2", age=11, step=26)}
        hang = find_hang(beats, now)
        assert hang.rank == 3 and hang.pid == child.pid
        assert hang.text.startswith(f"rank 3 (pid {child.pid}) is stopped (SIGSTOP")
        assert "no heartbeat for 11 s; it was last in step 26, B1.2" in hang.text
    finally:
        child.kill()
        child.wait()


def test_a_hung_job_blames_the_rank_that_computes():
    now = time.time()
    me = os.getpid()
    beats = {0: beat(0, me, now, "waiting for recv grad of microbatch 0 (stage 1->0)", still=30),
             1: beat(1, me, now, "waiting for send act", still=29),
             2: beat(2, me, now, "F1.0", still=25), 3: beat(3, me, now, "F1.0", still=26)}
    hang = find_hang(beats, now)
    assert hang.rank == 3
    assert hang.text.startswith(f"rank 3 (pid {me}) hangs: no progress for 26 s in step 3, "
                                "F1.0; ranks 0, 1, 2 were waiting")
    beats[2] = beat(2, me, now, "F1.0", still=5)  # one rank still moves
    assert find_hang(beats, now) is None


def error(job, rank: int, when: float, kind: str, message: str, comm: bool) -> None:
    (job / f"rank{rank}.error.json").write_text(json.dumps({
        "rank": rank, "pid": 1, "time": when, "step": 0, "action": "F1.0", "type": kind,
        "message": message, "where": "stage_1.py:12 in forward", "comm": comm}))


def test_the_root_cause_comes_first_and_once(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    error(job, 0, 1.0, "P2PError", "rank 0 step 3: recv did not complete: Connection closed "
          "by peer", True)
    error(job, 2, 2.0, "RuntimeError", "stage one exploded\nmore detail", False)
    error(job, 1, 3.0, "P2PError", "closed", True)
    text = summary(tmp_path)
    lines = text.splitlines()
    assert lines[0] == "rank 2 failed in step 0, F1.0: RuntimeError: stage one exploded"
    assert lines[1] == "  raised at stage_1.py:12 in forward"
    assert lines[2] == "  then ranks 0, 1 stopped after it"
    assert text.count("exploded") == 1
    write_verdict(job, "rank 3 (pid 9) is stopped", 3)
    assert summary(tmp_path) == "rank 3 (pid 9) is stopped"


def test_timeouts_point_at_the_rank_that_did_not_answer(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    error(job, 0, 1.0, "P2PError", "recv grad of microbatch 0 did not complete: Timed out", True)
    now = time.time()
    for rank, action in ((0, "waiting for recv grad"), (3, "F1.0")):
        b = beat(rank, os.getpid(), now, action, step=0)
        (job / f"rank{rank}.json").write_text(json.dumps(b.__dict__))
    lines = summary(tmp_path).splitlines()
    assert lines[0] == ("rank 3 did not answer: it was still in step 0, F1.0, when the others "
                        "gave up waiting for it")
    assert lines[1].startswith("  rank 0: P2PError: recv grad")


def test_without_error_files_the_log_says_which_rank_failed_first(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "torchrun.log").write_text("""Traceback (most recent call last):
  File "main.py", line 3, in <module>
ModuleNotFoundError: No module named 'parc_extra'
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Failures:
[1]:
  rank      : 1 (local_rank: 1)
  exitcode  : -15 (pid: 23471)  (SIGTERM)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 23470)
""")
    assert summary(tmp_path) == ("rank 0 ended with exit status 1: ModuleNotFoundError: No "
                                 "module named 'parc_extra'")
