"""The executor posts exactly the compiled order, with one tag for every message, and waits
for each group: on gloo it behaves as NCCL does. An order that would swap messages on GPUs
trains wrong here too, and one that would hang ends with the rank, step and action."""

import json
from pathlib import Path

import pytest

from ..contract.harness import compare, compile_pair, launch_all, variant

pytestmark = pytest.mark.slow


def _posting(program: Path) -> tuple[dict, list]:
    plan = json.loads((program / "plan.json").read_text())
    return plan, plan["program"]["schedule"]["posting"]


def _write(program: Path, plan: dict) -> None:
    (program / "plan.json").write_text(json.dumps(plan))


def test_misordered_posts_swap_messages_or_hang_as_on_gpus(tmp_path: Path, monkeypatch):
    text = variant("gpt_tiny.par", "pp = 2", "gpipe").replace("devices = 4", "devices = 2")
    swapped, ref = compile_pair(text, "swapped", tmp_path)
    hanging, _ = compile_pair(text, "hanging", tmp_path)

    # rank 0 runs and sends microbatch 1 before microbatch 0; rank 1 posts its receives in
    # the compiled order, so microbatch 1's activation lands in microbatch 0's buffer (tags
    # would have sorted them out on gloo; NCCL has none)
    plan, posting = _posting(swapped)
    assert [list(step) for step in posting[0][:4]] == [["run"], ["post"], ["run"], ["post"]]
    posting[0][0], posting[0][2] = posting[0][2], posting[0][0]
    posting[0][1], posting[0][3] = posting[0][3], posting[0][1]
    _write(swapped, plan)

    # rank 0 waits for the first gradient before it sends the third activation, which rank 1
    # needs before it can compute any gradient: both wait
    plan, posting = _posting(hanging)
    first_grad = next(i for i, step in enumerate(posting[0])
                      if any(p[0] == "recv" for p in step.get("post", [])))
    group = posting[0][first_grad]["post"]
    receive = next(p for p in group if p[0] == "recv")
    group.remove(receive)
    posting[0].insert(3, {"post": [receive]})
    _write(hanging, plan)

    monkeypatch.setenv("PARC_TIMEOUT_S", "10")
    result = launch_all([(swapped, tmp_path / "swapped" / "dump"),
                         (hanging, tmp_path / "hanging" / "dump")], steps=1, nproc=2,
                        timeout_s=300)
    assert result.done == [swapped]
    with pytest.raises(AssertionError, match="loss"):
        compare(tmp_path / "swapped" / "dump", ref, tmp_path / "swapped" / "refdump")
    (failure,) = result.failures
    assert failure.program == hanging
    assert "P2PError: rank 0 (pp 0) step" in failure.log
    assert "did not complete" in failure.log
