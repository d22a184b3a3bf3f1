"""The contract's own checks: a run equals itself, and a last step 2% off in one gradient is
found (the last step is compared from the parameters the run reached, see harness.compare)."""

import shutil
from pathlib import Path

import pytest
import torch

from parc.runtime.train import reference_steps

from .driver import dumped_steps
from .harness import compare, compile_pair, variant

PP1 = dict(mesh="pp = 1", schedule="gpipe")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """The reference program's own two steps, dumped as the driver dumps a parallel run."""
    where = tmp_path_factory.mktemp("run")
    text = variant("gpt_tiny.par", **PP1).replace("std.hw.cpu(devices = 4)",
                                                  "std.hw.cpu(devices = 1)")
    _, ref = compile_pair(text, "self", where)
    dump = where / "dump"
    losses = reference_steps(ref, steps=2, dump=str(dump), dump_steps=dumped_steps(2))
    (dump / "losses.txt").write_text("\n".join(repr(x) for x in losses) + "\n")
    return dump, ref


def _scale(dump: Path, step: int, what: str, name: str, factor: float) -> None:
    path = dump / f"step{step}" / f"{what}_rank0.pt"
    saved = torch.load(path, weights_only=False)
    tensor, splits = saved["shards"][name]
    saved["shards"][name] = (tensor * factor, splits)
    torch.save(saved, path)


def test_a_run_equals_itself(run, tmp_path):
    dump, ref = run
    assert len(compare(dump, ref, tmp_path / "refdump", steps=2)) == 2


def test_a_wrong_last_gradient_is_found(run, tmp_path):
    dump, ref = run
    bad = Path(shutil.copytree(dump, tmp_path / "bad"))  # the fixture stays as it ran
    _scale(bad, 1, "grads", "block[1].mlp.fc2.w", 1.02)
    with pytest.raises(AssertionError, match=r"after step 1.*block\[1\]\.mlp\.fc2\.w"):
        compare(bad, ref, tmp_path / "refdump", steps=2)
