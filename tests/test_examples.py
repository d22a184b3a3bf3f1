"""Every example passes `parc check`; the stdlib presets carry the published figures."""


import pytest

from parc.dsl.check import check_file, check_text
from parc.dsl.loader import stdlib_modules

from .examples import EXAMPLES, ROOT


def test_required_examples_exist():
    names = {p.stem for p in EXAMPLES}
    assert {"gpt_tiny", "gpt2_small", "llama_tiny", "gpt_tp", "gpt_interleaved", "gpt_zb",
            "gpt_skip"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_checks(path):
    spec = check_file(path)
    assert spec.model is not None and spec.train is not None and spec.parallel is not None


def test_gpt2_small_has_124m_parameters():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    count = sum(_numel(p.type) for p in spec.model.params)
    assert 124_000_000 < count < 125_000_000  # 124.4M with the vocabulary padded to 50304


def _numel(t):
    n = 1
    for d in t.shape:
        n *= d.as_int()
    return n


def test_stdlib_modules_load():
    assert set(stdlib_modules()) >= {"nn", "attention", "gpt", "llama", "hw"}
    text = "".join(f"use std.{m}\n" for m in stdlib_modules())
    check_text(text, "all.par")


@pytest.mark.parametrize("preset, memory, bf16, link", [
    ("h100_node", 80e9, 989e12, 450e9),
    ("h200_node", 141e9, 989e12, 450e9),
    ("a100_node", 80e9, 312e12, 300e9),
])
def test_gpu_presets(preset, memory, bf16, link):
    spec = check_text(f"use std.hw\nhardware h = std.hw.{preset}(nodes = 4)\n", "hw.par")
    hw = spec.hardware["h"]
    assert (hw.devices, hw.devices_per_node, hw.num_nodes) == (32, 8, 4)
    assert (hw.memory, hw.flops_bf16, hw.intra_bw) == (memory, bf16, link)
    assert hw.inter_bw in (50e9, 25e9) and hw.device == "cuda"


def test_llama_uses_grouped_query_attention():
    spec = check_file(ROOT / "examples/llama_tiny.par")
    params = {p.name: str(p.type) for p in spec.model.params}
    assert params["llama_block[0].attn.q.w"] == "f32[32, 32]"
    assert params["llama_block[0].attn.k.w"] == "f32[32, 16]"  # 2 kv heads of 8
    assert [op.kind for op in spec.model.ops].count("rope") == 8


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_example_compiles_to_a_program_that_loads(path, kernels, tmp_path):
    """Every example compiles with either kernel backend; every file it writes is valid
    Python, and (below 10M parameters, none split over ranks) every stage module builds in
    one process with its parameters."""
    from parc.compiler.codegen.program import write_program
    from parc.compiler.plan import make_plan
    from parc.runtime.programs import Program, load_program

    spec = check_file(path)
    out = write_program(make_plan(spec), tmp_path / "program", path.name, kernels)
    sources = sorted(out.glob("*.py"))
    assert {"main.py", "stage_0.py"} <= {p.name for p in sources}
    for source in sources:
        compile(source.read_text(), str(source), "exec")  # raises on a syntax error
    split = any(p["splits"] for stage in load_program(out)["stages"] for p in stage["params"])
    if sum(_numel(p.type) for p in spec.model.params) < 10_000_000 and not split:
        program = Program(out, None)
        assert sorted(program.modules) == list(range(len(program.spec["stages"])))
        params = sum(t.numel() for m in program.modules.values() for t in m.parameters())
        assert params >= sum(_numel(p.type) for p in spec.model.params)
