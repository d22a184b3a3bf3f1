"""The hand-written Triton kernels against torch: forward and backward, odd shapes (rows and
widths that are not powers of two, masked tails), f32 and f16, under the Triton interpreter;
and every kernel compiles for a real GPU target (sm_90) without a GPU."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from parc.runtime.functional import rope as rope_reference
from parc.stdlib.kernels import cross_entropy, layer_norm, norms, rms_norm, rope
from parc.stdlib.kernels.launch import partials
from tests.offsets import narrow_products

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=1e-2)}
# rows: 1; 15 and 26 (blocks of 2 and 4 rows, the last one short); 7; 67 (blocks of 9 over
# the 8 programs a norm backward runs off the GPU)
SHAPES = [(1, 1, 8), (3, 5, 37), (2, 13, 100), (7, 129), (67, 48)]


def grads(fn, inputs, out_grad):
    out = fn(*inputs)
    return out, torch.autograd.grad(out, [t for t in inputs if t.requires_grad], out_grad)


def check(ours, reference, inputs, dtype):
    y = ours(*inputs)
    g = torch.randn_like(y) if y.dim() else torch.ones((), dtype=y.dtype)
    y, got = grads(ours, inputs, g)
    r, want = grads(reference, inputs, g)
    torch.testing.assert_close(y, r, **TOL[dtype])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_norms(shape, dtype):
    n = shape[-1]
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    w = torch.randn(n, dtype=dtype, requires_grad=True)
    b = torch.randn(n, dtype=dtype, requires_grad=True)

    def ln_ref(x, w, b):
        return F.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5).to(dtype)

    def rms_ref(x, w):
        return F.rms_norm(x.float(), (n,), w.float(), 1e-6).to(dtype)

    check(layer_norm, ln_ref, (x, w, b), dtype)
    check(rms_norm, rms_ref, (x, w), dtype)


class Launches:
    """A kernel that records each launch's grid and tensor shapes, then runs it."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append((grid, [tuple(a.shape) for a in args
                                      if isinstance(a, torch.Tensor)]))
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_norm_backward_sums_weight_gradients_per_block_of_rows(monkeypatch):
    """The f32 temporary of dW (and dB) is one partial row per program, not one per row."""
    rows, n = 67, 48
    programs, per_program = partials(rows, torch.device("cpu"))
    assert (programs, per_program) == (8, 9)  # 8 x 9 = 72 >= 67: the last block is short
    assert partials(5, torch.device("cpu")) == (5, 1)
    ln, rms = Launches(norms.layer_norm_bwd), Launches(norms.rms_norm_bwd)
    monkeypatch.setattr(norms, "layer_norm_bwd", ln)
    monkeypatch.setattr(norms, "rms_norm_bwd", rms)
    x = torch.randn(rows, n, requires_grad=True)
    w = torch.randn(n, requires_grad=True)
    b = torch.randn(n, requires_grad=True)
    got = torch.autograd.grad(layer_norm(x, w, b).square().sum(), (x, w, b))
    want = torch.autograd.grad(F.layer_norm(x, (n,), w, b, 1e-5).square().sum(), (x, w, b))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **TOL[torch.float32])
    got = torch.autograd.grad(rms_norm(x, w).square().sum(), (x, w))
    want = torch.autograd.grad(F.rms_norm(x, (n,), w, 1e-6).square().sum(), (x, w))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, **TOL[torch.float32])
    # X, W, DY, DX, the partials of DW (and DB), then the saved statistics
    assert ln.calls == [((programs,), [(rows, n), (n,), (rows, n), (rows, n), (programs, n),
                                       (programs, n), (rows,), (rows,)])]
    assert rms.calls == [((programs,), [(rows, n), (n,), (rows, n), (rows, n), (programs, n),
                                        (rows,)])]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows, vocab", [(1, 5), (7, 1000), (5, 5003), (3, 9000)])
def test_cross_entropy_streams_the_vocabulary(rows, vocab, dtype):
    logits = (torch.randn(rows, vocab) * 3).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (rows,))

    def reference(logits):
        return F.cross_entropy(logits.float(), targets)

    check(lambda lg: cross_entropy(lg, targets), reference, (logits,), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 4, 2), (2, 3, 7, 10), (2, 5, 33, 64)])
def test_rope(shape, dtype):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)

    def reference(x):
        return rope_reference(x.float()).to(dtype)

    check(rope, reference, (x,), dtype)


COMPILE = textwrap.dedent('''
    import importlib
    import pathlib
    import sys
    import triton
    from triton.backends.compiler import GPUTarget
    norms, cross_entropy, rope = (importlib.import_module(f"parc.stdlib.kernels.{m}")
                                  for m in ("norms", "cross_entropy", "rope"))

    P, F, I = "*fp16", "*fp32", "i32"
    kernels = {
        norms.layer_norm_fwd: dict(X=P, W=P, B=P, Y=P, Mean=F, Rstd=F, stride=I, N=I, eps="fp32"),
        norms.layer_norm_bwd: dict(X=P, W=P, DY=P, DX=P, DW=F, DB=F, Mean=F, Rstd=F, stride=I,
                                   N=I, rows=I, per_program=I),
        norms.rms_norm_fwd: dict(X=P, W=P, Y=P, Rstd=F, stride=I, N=I, eps="fp32"),
        norms.rms_norm_bwd: dict(X=P, W=P, DY=P, DX=P, DW=F, Rstd=F, stride=I, N=I, rows=I,
                                 per_program=I),
        cross_entropy.cross_entropy_fwd: dict(Logits=P, Targets="*i64", Loss=F, Lse=F,
                                              stride=I, V=I),
        cross_entropy.cross_entropy_bwd: dict(Logits=P, Targets="*i64", Lse=F, DLogits=P,
                                              Grad=F, rows=I, stride=I, V=I),
        rope.rope_kernel: dict(X=P, Y=P, stride=I, S=I, HALF=I, theta="fp32", sign="fp32"),
    }
    for fn, signature in kernels.items():
        src = triton.compiler.ASTSource(fn=fn, signature={**signature, "BLOCK": "constexpr"},
                                        constexprs={"BLOCK": 1024})
        out = triton.compile(src, target=GPUTarget("cuda", 90, 32))
        assert "ptx" in out.asm and out.asm["cubin"], fn.__name__
        (pathlib.Path(sys.argv[1]) / f"{fn.__name__}.ttir").write_text(out.asm["ttir"])
        print("compiled", fn.__name__)
''')


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every kernel compiled for sm_90 (no GPU needed): the run and each kernel's TTIR."""
    out = tmp_path_factory.mktemp("ttir")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", COMPILE, str(out)], capture_output=True,
                            text=True, env=env, timeout=300)
    return result, {p.stem: p.read_text() for p in out.glob("*.ttir")}


def test_every_kernel_compiles_for_an_h100(compiled):
    result, _ = compiled
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 7


def test_narrow_products_finds_an_i32_row_offset():
    """The check itself, on TTIR lines as Triton 3.8 prints them: only the i32 product of the
    program id is reported, not one of columns nor the i64 one."""
    ttir = """
    %row = tt.get_program_id x : i32 loc(#loc37)
    %cols = tt.make_range {end = 1024 : i32, start = 0 : i32} : tensor<1024xi32> loc(#loc38)
    %k = arith.muli %cols, %cols : tensor<1024xi32> loc(#loc39)
    %x = arith.muli %row, %stride : i32 loc(#loc40)
    %x_1 = tt.addptr %X, %x : !tt.ptr<f16>, i32 loc(#loc41)
    %r = arith.extsi %row : i32 to i64 loc(#loc42)
    %y = arith.muli %r, %N : i64 loc(#loc43)
    """
    assert narrow_products(ttir) == ["%x = arith.muli %row, %stride : i32"]


def test_offsets_from_the_program_id_are_64_bit(compiled):
    """A 32k vocabulary x 64k tokens is past 2^31 elements: every row offset is an i64
    product, seen in the TTIR rather than by allocating 8 GB."""
    result, ttir = compiled
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(ttir) == 7
    assert {name: narrow_products(text) for name, text in ttir.items()} == \
        {name: [] for name in ttir}


def test_gpu_benchmark_cases_run_interpreted(tmp_path):
    """bench/kernels.py's cases (library and generated kernels, as the GPU run times them) at
    a small width on CPU: parc's function equals torch's, forward and backward, so the first
    session with a GPU spends its time measuring."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    generated = bench.generated_kernels(tmp_path)
    assert set(generated) == {name for _, name in bench.GENERATED.values()}
    cases = bench.cases(64, 96, torch.float32, generated, device="cpu", tokens=16, seq=8,
                        head_dim=16)
    assert len(cases) == 10
    for name, (ours, eager, inputs, moved) in cases.items():
        assert moved > 0
        got, want = ours(), eager()
        for a, b in zip(got if isinstance(got, tuple) else [got],
                        want if isinstance(want, tuple) else [want]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
        for a, b in zip(bench.backward(ours, inputs), bench.backward(eager, inputs)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def test_cross_entropy_backward_scales_by_the_incoming_gradient_on_the_device():
    logits = torch.randn(7, 37, requires_grad=True)
    targets = torch.randint(0, 37, (7,))
    g = torch.tensor(2.5)  # read by the kernel, not synchronised to the host
    mine, = torch.autograd.grad(cross_entropy(logits, targets), logits, g)
    want, = torch.autograd.grad(F.cross_entropy(logits, targets), logits, g)
    torch.testing.assert_close(mine, want)
