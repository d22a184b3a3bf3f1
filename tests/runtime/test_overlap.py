"""The data-parallel gradient all-reduce overlaps the last backward pass: buckets whose
gradients are all in are launched while the backward is still running."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..contract.harness import compile_pair, variant

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).parent / "overlap_driver.py"


def test_buckets_launch_inside_the_last_backward(tmp_path: Path):
    text = variant("gpt_tiny.par", "dp = 2", "1f1b", "    tokens, targets: S(0)@dp")
    text = text.replace("devices = 4", "devices = 2").replace("d = 32", "d = 64")
    program, _ = compile_pair(text, "overlap", tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "--max-restarts=0", str(DRIVER), str(tmp_path),
                          str(program), str(64 * 1024)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    for rank in range(2):
        launches = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert len(launches) >= 3
        inside = [launch["inside"] for launch in launches]
        assert sum(inside) >= len(inside) - 1, launches  # all but the first layers' bucket
