"""`recompute all` in generated programs: less memory held between forward and backward,
the same results."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.dsl.spec import ScheduleSpec
from parc.runtime.shards import assemble
from parc.runtime.train import reference_steps

ROOT = Path(__file__).resolve().parents[2]


def compile_serial(tmp: Path, recompute: str | None) -> Path:
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    extra = f"  recompute {recompute}\n" if recompute else ""
    text = re.sub(r"parallel on cpu4 \{.*?\n\}", "parallel on cpu4 {\n  mesh (dp = 4)\n"
                  f"{extra}}}", text, flags=re.S)
    spec = check_text(text, "r.par")
    serial = replace(spec.parallel, mesh=(("pp", 1),), sbp={}, stages="auto",
                     schedule=ScheduleSpec("gpipe"))  # one process, the spec's recompute kept
    name = recompute or "full"
    return write_program(make_plan(replace(spec, parallel=serial)), tmp / name, "r.par")


def saved_bytes(program: Path, dump: Path) -> tuple[int, list[float]]:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = reference_steps(program, steps=1, dump=str(dump))
    return total, losses


@pytest.mark.parametrize("what", ["all", "block"])
def test_recompute_saves_memory_and_keeps_results(tmp_path, what):
    full, lean = compile_serial(tmp_path, None), compile_serial(tmp_path, what)
    assert f'"recompute": [\n   "{what}"\n  ]' in (lean / "plan.json").read_text()
    if what == "block":  # each block runs under checkpoint in its class's forward
        stage = (lean / "stage_0.py").read_text()
        assert "# the call: recomputed in the backward pass" in stage
        assert "= checkpoint(body, x0, use_reentrant=False)" in stage
    full_bytes, full_loss = saved_bytes(full, tmp_path / "d1")
    lean_bytes, lean_loss = saved_bytes(lean, tmp_path / "d2")
    assert lean_bytes < full_bytes / 5
    assert full_loss == lean_loss
    for what in ("grads", "params"):
        _, a = assemble(tmp_path / "d1", what)
        _, b = assemble(tmp_path / "d2", what)
        for name in a:
            torch.testing.assert_close(a[name], b[name])
