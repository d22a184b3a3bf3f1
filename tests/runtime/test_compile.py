"""`compile true` / `--compile`: recorded in plan.json, refused where the plan cannot run
compiled, and in one process the compiled stages train as the eager ones with the eager
modules' parameters."""

import json
import re
from pathlib import Path

import pytest
import torch

from parc import api
from parc.cli import main
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from parc.runtime.programs import Program
from parc.runtime.train import run_steps

ROOT = Path(__file__).resolve().parents[2]
TINY = (ROOT / "examples" / "gpt_tiny.par").read_text()


def _spec(tmp_path: Path, extra: str = "", schedule: str = "1f1b", mesh: str = "pp = 2, dp = 2",
          name: str = "tiny") -> Path:
    text = TINY.replace("  schedule 1f1b\n", f"  schedule {schedule}\n{extra}")
    text = text.replace("mesh (pp = 2, dp = 2)", f"mesh ({mesh})")
    if "dp" not in mesh:
        text = "\n".join(line for line in text.splitlines() if "@dp" not in line) + "\n"
    path = tmp_path / f"{name}.par"
    path.write_text(text)
    return path


def _compiled(out: Path):
    return json.loads((out / "plan.json").read_text())["program"]["compile"]


def test_setting_and_flag_reach_plan_json(tmp_path: Path):
    plain, on = _spec(tmp_path), _spec(tmp_path, "  compile true\n", name="on")
    assert main(["compile", str(plain), "-o", str(tmp_path / "a")]) == 0
    assert _compiled(tmp_path / "a") is False
    assert main(["compile", str(on), "-o", str(tmp_path / "b")]) == 0
    assert _compiled(tmp_path / "b") == "inductor"
    assert main(["compile", str(plain), "-o", str(tmp_path / "c"), "--compile"]) == 0
    assert _compiled(tmp_path / "c") == "inductor"
    assert main(["compile", str(on), "-o", str(tmp_path / "d"), "--no-compile"]) == 0
    assert _compiled(tmp_path / "d") is False


def test_a_bad_value_is_a_located_error():
    text = TINY.replace("  schedule 1f1b\n", "  schedule 1f1b\n  compile 1\n")
    with pytest.raises(ParcError) as info:
        check_text(text, "tiny.par")
    line = text.splitlines().index("  compile 1") + 1
    assert re.search(rf"tiny.par:{line}:3: error\[E148\]: `compile` must be true or false",
                     info.value.render())


def test_the_flag_refuses_a_split_backward_at_the_schedule(tmp_path: Path):
    path = _spec(tmp_path, schedule="zb_h1", mesh="pp = 4")
    with pytest.raises(ParcError) as info:
        api.compile_program(path, tmp_path / "out", compile=True)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E351" and "split backward" in diagnostic.message
    assert diagnostic.span.line == path.read_text().splitlines().index("  schedule zb_h1") + 1
    assert not (tmp_path / "out").exists()


def test_compiled_stages_train_as_the_eager_ones(tmp_path: Path, monkeypatch):
    """One process, every stage here (a mesh of the pipeline axis alone): two steps of the
    compiled program (aot_eager) equal the eager ones, and the optimizer, checkpoints and
    dumps see the eager modules' parameters under their own names."""
    monkeypatch.setenv("PARC_COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    path = _spec(tmp_path, mesh="pp = 4")
    eager_dir = api.compile_program(path, tmp_path / "eager")
    compiled_dir = api.compile_program(path, tmp_path / "compiled", compile=True)
    eager, compiled = Program(eager_dir, None), Program(compiled_dir, None)
    assert compiled.backend == "aot_eager" and eager.backend is None
    for index, runner in compiled.runners.items():
        assert isinstance(runner, torch._dynamo.eval_frame.OptimizedModule)
        assert runner._orig_mod is compiled.modules[index]
        assert not any(k.startswith("_orig_mod") for k in compiled.modules[index].state_dict())
    assert list(compiled.named_shards()) == list(eager.named_shards())
    torch._dynamo.utils.counters.clear()
    want, got = run_steps(eager, 2), run_steps(compiled, 2)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= len(compiled.runners)
    assert got == pytest.approx(want, rel=1e-5)
    for name, (param, _) in eager.named_shards().items():
        torch.testing.assert_close(compiled.named_shards()[name][0], param, rtol=1e-5,
                                   atol=1e-6)
