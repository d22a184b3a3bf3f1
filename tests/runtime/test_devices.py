"""Every tensor handed to a collective or a p2p operation during a step is on the compute
device (tests/runtime/device_audit.py tells host-made tensors apart on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ..contract.harness import GPT_TP, GPT_VOCAB, compile_pair, variant
from .device_audit import DeviceAudit

DRIVER = Path(__file__).parent / "audit_driver.py"


def test_the_audit_flags_host_tensors_and_passes_device_ones():
    audit = DeviceAudit(torch.device("cpu"))
    with audit:
        host = torch.zeros(())
        moved = torch.ones(3).cpu()
        fine = torch.zeros((), device=torch.device("cpu"))
        derived = torch.ones(2, device="cpu") * 2
    audit.check("all_reduce", [host, moved, fine, derived])
    assert len(audit.findings) == 2 and audit.checked == 4


@pytest.mark.slow
def test_every_communicated_tensor_is_on_the_compute_device(tmp_path: Path):
    """dp x tp x pp with the vocabulary-parallel head, gradient clipping and ZeRO: the loss,
    the gradient norm, bucketed sync, tensor-parallel collectives and pipeline messages."""
    plans = {
        "tp_pp_clip": variant("gpt_tiny.par", "pp = 2, tp = 2", "1f1b",
                              GPT_TP + GPT_VOCAB).replace("steps 20", "steps 20\n  grad_clip 0.1"),
        "zero_dp2_pp2": variant("gpt_tiny.par", "pp = 2, dp = 2", "zb_h1",
                                "    tokens, targets: S(0)@dp\n    *.w: S(0)@dp"),
    }
    programs = [str(compile_pair(text, name, tmp_path)[0]) for name, text in plans.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=4", "--max-restarts=0", str(DRIVER),
                          str(tmp_path), *programs], capture_output=True, text=True,
                         timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    found = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert all(f["checked"] > 50 for f in found)
    assert not [x for f in found for x in f["findings"]], found
