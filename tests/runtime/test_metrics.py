"""metrics.jsonl and the checkpoints agree after any crash: every step appears once."""

import json
from pathlib import Path

import pytest

from parc.runtime import checkpoint
from parc.runtime.metrics import Metrics, cut_back

from .serial import serial_program

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def steps_of(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_cut_back_keeps_the_steps_before_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in [*range(14), *range(10, 14)]]
    path.write_text("\n".join(lines) + '\n{"step": 14, "lo')  # killed mid-line
    assert cut_back(path, 10) == 10
    assert steps_of(path) == list(range(10))
    assert cut_back(tmp_path / "none.jsonl", 3) == 0


def serial(tmp: Path):
    """A maker of fresh Programs of one serial gpt_tiny checkpointing every 2 steps."""
    from parc.runtime.programs import Program

    directory = serial_program("gpt_tiny.par", tmp, f'checkpoint every 2 to "{tmp / "ck"}"')
    return lambda: Program(directory, None)


class Killed(BaseException):
    pass


def test_a_kill_right_after_a_checkpoint_loses_no_step(tmp_path, monkeypatch):
    from parc.runtime.train import run_steps

    program = serial(tmp_path)
    save = checkpoint.save

    def save_and_die(directory, step, *args, **kwargs):
        save(directory, step, *args, **kwargs)
        if step == 2:
            raise Killed  # the job dies between the save and whatever follows it

    monkeypatch.setattr(checkpoint, "save", save_and_die)
    metrics = tmp_path / "metrics.jsonl"
    with pytest.raises(Killed):
        run_steps(program(), 4, Metrics(metrics))
    assert checkpoint.latest(tmp_path / "ck").name == "step_2"
    assert steps_of(metrics) == [0, 1]  # step 1 was recorded before its checkpoint
    monkeypatch.setattr(checkpoint, "save", save)
    log = Metrics(metrics)
    run_steps(program(), 4, log, resume=True)
    log.close()
    assert steps_of(metrics) == [0, 1, 2, 3]


def test_a_resume_cuts_the_steps_after_its_checkpoint(tmp_path):
    from parc.runtime.train import run_steps

    program = serial(tmp_path)
    metrics = tmp_path / "metrics.jsonl"
    log = Metrics(metrics)
    run_steps(program(), 3, log)  # checkpoint after step 1, metrics up to step 2
    log.close()
    assert steps_of(metrics) == [0, 1, 2]
    log = Metrics(metrics)
    run_steps(program(), 4, log, resume=True)
    log.close()
    assert steps_of(metrics) == [0, 1, 2, 3]
