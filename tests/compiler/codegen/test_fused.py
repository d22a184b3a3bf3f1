"""The fuse pass and its generated Triton kernels (forward and backward) against torch."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from parc.compiler.codegen.emit import Emitter
from parc.compiler.codegen.program import write_program
from parc.compiler.ir import print_graph
from parc.compiler.ir_parse import parse_graph
from parc.compiler.plan import make_plan, planned_graph
from parc.dsl.check import check_file, check_text
from parc.ops.catalog import CATALOG
from parc.ops.comm import COMMS
from parc.ops.lowering import torch_lowering
from parc.runtime.programs import sibling
from tests.offsets import narrow_products

ROOT = Path(__file__).resolve().parents[3]


def kernel_groups(graph):
    out = {}
    for op in graph.ops:
        if op.attr("kernel") is not None:
            out.setdefault(op.attr("kernel"), []).append(op.kind)
    return out


def test_fuse_groups_bias_gelu_and_residual_adds():
    graph = planned_graph(check_file(ROOT / "examples/gpt_tiny.par"), "fuse", verify=True)
    kinds = sorted(tuple(v) for v in kernel_groups(graph).values())
    assert kinds.count(("add", "gelu")) == 4  # fc1 bias + GELU in every block
    # projection bias + residual + the next norm, twice per block; the sum is also kept
    assert kinds.count(("add", "add", "layer_norm")) == 7
    assert kinds.count(("add", "layer_norm")) == 1  # token + position embedding, then ln1
    assert kinds.count(("add", "add")) == 1  # block[1]'s sum leaves stage 0: its norm is later
    assert parse_graph(print_graph(graph)) == graph


def test_fused_groups_stay_inside_one_recomputed_call():
    text = (ROOT / "examples/gpt_tiny.par").read_text().replace(
        "  schedule 1f1b", "  schedule 1f1b\n  recompute block")
    graph = planned_graph(check_text(text, "rc.par"), "fuse", verify=True)
    groups = {}
    for op in graph.ops:
        if op.attr("kernel") is not None:
            groups.setdefault(op.attr("kernel"), []).append(op.scope.split(".")[0])
    assert len(groups) == 12  # the residual no longer joins the next block's ln1
    assert all(len(set(scopes)) == 1 for scopes in groups.values())


def test_fused_groups_never_span_communication():
    graph = planned_graph(check_file(ROOT / "examples/gpt_tp.par"), "fuse", verify=True)
    producer = {o: op for op in graph.ops for o in op.outputs}
    for op in graph.ops:
        if op.attr("kernel") is None:
            continue
        for name in op.inputs:
            before = producer.get(name)
            if before is not None and before.kind in COMMS:
                assert before.attr("kernel") is None


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    out = {}
    for name in ("gpt_tiny", "llama_tiny", "gpt_tp"):
        plan = make_plan(check_file(ROOT / f"examples/{name}.par"))
        emitter = Emitter(plan, "triton")
        emitter.stages()
        directory = write_program(plan, tmp_path_factory.mktemp(name) / "p", name, "triton")
        out[name] = (emitter, directory)
    return out


@pytest.mark.parametrize("name", ["gpt_tiny", "llama_tiny"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_generated_kernels_match_torch(programs, name, dtype):
    emitter, directory = programs[name]
    module = sibling(str(directory / "main.py"), "kernels")
    graph = emitter.graph
    assert any(k.norm is not None and k.keeps_sum for k in emitter.fused)
    for kernel in emitter.fused:
        # odd sizes: the row is not a power of two and the flat length is not a multiple of
        # the block; rank-1 operands (biases, norm weights) broadcast over the rest, so their
        # gradients are summed back by the wrapper
        torch.manual_seed(0)  # f16 at 1e-2 holds for these inputs, not for every draw
        shape = [3, 5, graph.values[kernel.output].type.shape[-1].as_int() + 1]
        names = kernel.inputs + kernel.weights
        inputs = [torch.randn(shape if graph.values[n].type.rank > 1 else shape[-1:],
                              dtype=dtype, requires_grad=True) for n in names]
        got = getattr(module, kernel.name)(*inputs)
        got = list(got) if isinstance(got, tuple) else [got]
        env = {f"x{i}": t for i, t in enumerate(inputs)}
        local = {n: f"x{i}" for i, n in enumerate(names)}
        for k, op in enumerate(kernel.ops):
            attrs = CATALOG[op.kind].full_attrs(op.attrs)
            expr = torch_lowering(op.kind, [local[i] for i in op.inputs], [], attrs)
            env[f"r{k}"] = eval(expr, {"torch": torch, "F": F}, env)  # noqa: S307
            local[op.outputs[0]] = f"r{k}"
        want = [env[local[n]] for n in kernel.outputs]
        assert len(got) == len(want)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2,
                                                                           atol=1e-2)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.float(), b.float(), **tol)
        cotangents = [torch.randn_like(w) for w in want]
        mine = torch.autograd.grad(got, inputs, cotangents)
        theirs = torch.autograd.grad(want, inputs, cotangents)
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a.float(), b.float(), **tol)


def test_broadcast_operands_are_not_expanded_in_memory(programs):
    emitter, directory = programs["gpt_tiny"]
    module = sibling(str(directory / "main.py"), "kernels")
    kernel = next(k for k in emitter.fused if [op.kind for op in k.ops] == ["add", "gelu"])
    x = torch.randn(4, 6, 128, requires_grad=True)
    bias = torch.randn(128, requires_grad=True)
    out = getattr(module, kernel.name)(x, bias)
    saved = [t.shape for t in out.grad_fn.saved_tensors]
    assert torch.Size([128]) in saved and saved.count(torch.Size([4, 6, 128])) == 1


def test_row_backward_sums_weight_gradients_per_block_of_rows(programs, monkeypatch):
    """A norm group's backward stores one partial row of dW and dB per program, not one per
    row: 67 rows run as 8 programs of 9 rows off the GPU, the last block short."""
    emitter, directory = programs["gpt_tiny"]
    module = sibling(str(directory / "main.py"), "kernels")
    kernel = next(k for k in emitter.fused
                  if [op.kind for op in k.ops] == ["add", "add", "layer_norm"] and k.keeps_sum)
    rows, n = 67, 48
    launches = []
    real = getattr(module, f"{kernel.name}_bwd")

    class Recorded:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append((grid, [tuple(a.shape) for a in args
                                        if isinstance(a, torch.Tensor)]))
                return real[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(module, f"{kernel.name}_bwd", Recorded())
    torch.manual_seed(0)
    summands = [torch.randn((rows, n) if emitter.graph.values[name].type.rank > 1 else (n,),
                            requires_grad=True) for name in kernel.inputs]  # one is a bias
    w, b = torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True)
    inputs = [*summands, w, b]
    h, y = getattr(module, kernel.name)(*inputs)
    cot = torch.randn(rows, n), torch.randn(rows, n)
    mine = torch.autograd.grad((h, y), inputs, cot)
    want_h = summands[0] + summands[1] + summands[2]
    want_y = F.layer_norm(want_h, (n,), w, b, 1e-5)
    theirs = torch.autograd.grad((want_h, want_y), inputs, cot)
    for got, want in zip(mine, theirs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    (grid, shapes), = launches
    assert grid == (8,)
    assert shapes[-2:] == [(8, n), (8, n)]  # DW, DB
    assert (rows, n) not in shapes[-2:]


@pytest.fixture(scope="module")
def compiled(programs, tmp_path_factory):
    """Every generated kernel (GPT's layer norms, LLaMA's RMS norms) compiled for sm_90: the
    run and each kernel's TTIR."""
    files = [str(programs[name][1] / "kernels.py") for name in ("gpt_tiny", "llama_tiny")]
    out = tmp_path_factory.mktemp("ttir")
    script = f"""
import importlib.util, inspect, pathlib, triton
from triton.backends.compiler import GPUTarget
count = 0
for i, path in enumerate({files!r}):
  spec = importlib.util.spec_from_file_location(f"k{{i}}", path)
  k = importlib.util.module_from_spec(spec); spec.loader.exec_module(k)
  for name, fn in vars(k).items():
    if isinstance(fn, triton.runtime.jit.JITFunction):
      params = [p for p in inspect.signature(fn.fn).parameters if p != "BLOCK"]
      sig = {{p: ("i32" if p in ("N", "rows", "per_program") or p[0] == "M" else "*fp16")
             for p in params}}
      src = triton.compiler.ASTSource(fn=fn, signature={{**sig, "BLOCK": "constexpr"}},
                                      constexprs={{"BLOCK": 1024}})
      asm = triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm
      assert asm["cubin"]
      pathlib.Path({str(out)!r}, f"k{{i}}.{{name}}.ttir").write_text(asm["ttir"])
      count += 1
print("compiled", count)
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300)
    return result, {p.stem: p.read_text() for p in out.glob("*.ttir")}


def test_generated_kernels_compile_for_an_h100(compiled, programs):
    result, _ = compiled
    assert result.returncode == 0, result.stderr[-3000:]
    written = sum((programs[name][1] / "kernels.py").read_text().count("@triton.jit")
                  for name in ("gpt_tiny", "llama_tiny"))
    assert int(result.stdout.split()[-1]) == written >= 14  # every pattern's fwd and bwd


def test_generated_offsets_are_64_bit(compiled):
    """`pid * BLOCK` and `row * N` are i64, so a group over 2^31 elements or more (a
    residual stream of 64k tokens x 32k) addresses its memory correctly."""
    result, ttir = compiled
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(name.endswith("_bwd") for name in ttir)
    assert {name: narrow_products(text) for name, text in ttir.items()} == \
        {name: [] for name in ttir}


def test_groups_with_one_pattern_share_one_kernel(tmp_path):
    """gpt2_small's 12 blocks fuse the same few chains in every block: the program has one
    forward and one backward kernel per distinct pattern, each called by every group of it."""
    spec = check_file(ROOT / "examples/gpt2_small.par")
    plan = make_plan(spec)
    emitter = Emitter(plan, "triton")
    emitter.stages()
    groups = sum(len(k.sites) for k in emitter.fused)
    assert groups >= 30 and len(emitter.fused) <= 6, [k.sites for k in emitter.fused]
    assert len({k.pattern() for k in emitter.fused}) == len(emitter.fused)
    out = write_program(plan, tmp_path / "p", "g.par", "triton")
    kernels = (out / "kernels.py").read_text()
    assert kernels.count("@triton.jit") == 2 * len(emitter.fused)
    stages = "".join(p.read_text() for p in out.glob("stage_*.py"))
    calls = {int(n) for n in re.findall(r"kernels\.fused_(\d+)\(", stages)}
    assert calls == set(range(len(emitter.fused)))
    # a def's calls of one class share its lines: fewer call sites than groups
    assert 0 < sum(stages.count(f"kernels.fused_{k}(") for k in calls) < groups
