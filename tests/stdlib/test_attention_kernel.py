"""The causal attention kernel against torch's scaled_dot_product_attention: forward and the
three gradients, MHA and grouped-query, ragged sequence lengths and a head_dim that is not a
power of two, under the Triton interpreter (blocks of 16 rows); and its four kernels compile
for sm_90 at the launch settings a GPU uses, within shared memory, with 64-bit offsets."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from parc.stdlib.kernels import causal_attention
from tests.offsets import narrow_products

# (batch, heads, kv_heads, seq, head_dim)
SHAPES = [
    (1, 2, 2, 16, 16),  # MHA, one block
    (2, 4, 2, 37, 16),  # GQA, a ragged last block of 5 rows
    (1, 4, 1, 64, 32),  # multi-query, four blocks
    (2, 3, 3, 20, 12),  # head_dim 12: columns masked to a block of 16
]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def inputs(batch, heads, kv_heads, seq, head_dim, dtype):
    """q as split_heads leaves it (a [batch, seq, heads, head_dim] tensor, transposed)."""
    torch.manual_seed(0)
    q = torch.randn(batch, seq, heads, head_dim, dtype=dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(batch, kv_heads, seq, head_dim, dtype=dtype, requires_grad=True)
    v = torch.randn(batch, kv_heads, seq, head_dim, dtype=dtype, requires_grad=True)
    return q, k, v


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                          enable_gqa=q.shape[-3] != k.shape[-3])


def against_f32_sdpa(q, k, v):
    """Our output and gradients, and SDPA's in f32 on the same (rounded) inputs."""
    out = causal_attention(q, k, v)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(q.dtype)
    got = torch.autograd.grad(out, (q, k, v), grad)
    ref = [t.detach().float().requires_grad_() for t in (q, k, v)]
    want_out = sdpa(*ref)
    want = torch.autograd.grad(want_out, ref, grad.float())
    return (out, *got), (want_out, *want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_sdpa(shape, dtype):
    got, want = against_f32_sdpa(*inputs(*shape, dtype))
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        assert a.dtype == dtype and a.shape == b.shape, name
        torch.testing.assert_close(a.float(), b, **TOL[dtype], msg=name)


def test_heads_merge_as_a_view_and_the_backward_keeps_row_statistics():
    """The output is [batch, seq, heads, head_dim] in memory, so merge_heads after it copies
    nothing; the backward keeps q, k, v, the output and one f32 per row: no seq x seq."""
    q, k, v = inputs(2, 4, 2, 37, 16, torch.float32)
    out = causal_attention(q, k, v)
    assert out.transpose(1, 2).is_contiguous()
    saved = sorted(tuple(t.shape) for t in out.grad_fn.saved_tensors)
    assert saved == sorted([(2, 4, 37, 16), (2, 2, 37, 16), (2, 2, 37, 16), (2, 4, 37, 16),
                            (2 * 4, 37)])


def test_leading_dimensions_and_layouts():
    """No batch dimension, and a key tensor whose head_dim is not the unit stride."""
    q, k, v = inputs(1, 2, 1, 19, 16, torch.float32)
    q3, v3 = q[0].detach(), v[0].detach()
    k3 = k[0].detach().transpose(-1, -2).contiguous().transpose(-1, -2)
    assert k3.stride(-1) != 1
    torch.testing.assert_close(causal_attention(q3, k3, v3), sdpa(q3, k3, v3), **TOL[torch.float32])


def test_shape_mistakes_are_value_errors():
    q, k, v = inputs(1, 3, 2, 8, 16, torch.float32)
    with pytest.raises(ValueError, match="3 query heads do not group over 2"):
        causal_attention(q, k, v)
    with pytest.raises(ValueError, match="not \\[..., heads, seq, head_dim\\] alike"):
        causal_attention(q, k[:, :, :4], v[:, :, :4])


SM90_SHARED = 232448  # bytes of shared memory one block may use on an H100/H200
COMPILE = textwrap.dedent('''
    import inspect
    import json
    import pathlib
    import sys

    import torch
    import triton
    from triton.backends.compiler import GPUTarget

    from parc.stdlib.kernels import attention as A

    CONST = ("BLOCK_M", "BLOCK_N", "BLOCK_D", "NATIVE")
    SIZES = ("H", "GROUP", "KVH", "S", "D")
    shared = {}
    # f16 shares bf16's settings; f32 at head_dim 128 needs the most shared memory
    for dtype, ptr, head_dim in ((torch.bfloat16, "*bf16", 64), (torch.bfloat16, "*bf16", 128),
                                 (torch.float16, "*fp16", 128), (torch.float32, "*fp32", 128)):
        cfg = A.config(head_dim, dtype, on_gpu=True)
        for fn, launch in ((A.attention_fwd, cfg.fwd), (A.attention_bwd_delta, cfg.dq),
                           (A.attention_bwd_dkdv, cfg.dkdv), (A.attention_bwd_dq, cfg.dq)):
            params = list(inspect.signature(fn.fn).parameters)
            signature = {p: "constexpr" if p in CONST else "*fp32" if p in ("Lse", "Delta")
                         else "fp32" if p.endswith("scale") else "i32"
                         if p in SIZES or p.islower() else ptr for p in params}
            values = {"BLOCK_M": launch.block_m, "BLOCK_N": launch.block_n,
                      "BLOCK_D": cfg.block_d, "NATIVE": cfg.native}
            src = triton.compiler.ASTSource(
                fn=fn, signature=signature,
                constexprs={p: values[p] for p in CONST if p in params})
            out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(
                num_warps=launch.num_warps, num_stages=launch.num_stages))
            assert out.asm["cubin"], fn.__name__
            name = f"{fn.__name__}.{ptr[1:]}.d{head_dim}"
            (pathlib.Path(sys.argv[1]) / f"{name}.ttir").write_text(out.asm["ttir"])
            shared[name] = out.metadata.shared
    print(json.dumps(shared))
''')


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The four kernels compiled for sm_90 (no GPU needed) in bf16 at head_dim 64 and 128,
    in f16 and f32 at 128, at the wrapper's GPU launch settings: the run and each kernel's
    TTIR."""
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("this Triton has no NVIDIA backend to compile with")
    out = tmp_path_factory.mktemp("ttir")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", COMPILE, str(out)], capture_output=True,
                            text=True, env=env, timeout=600)
    return result, {p.stem: p.read_text() for p in out.glob("*.ttir")}


def test_attention_kernels_compile_for_an_h100_within_shared_memory(compiled):
    import json

    result, ttir = compiled
    assert result.returncode == 0, result.stderr[-3000:]
    shared = json.loads(result.stdout.splitlines()[-1])
    assert len(shared) == len(ttir) == 4 * 4
    assert {name: size for name, size in shared.items() if size > SM90_SHARED} == {}
    dots = [line for line in ttir["attention_fwd.bf16.d128"].splitlines() if "tt.dot" in line]
    assert dots and all("xbf16> * tensor<" in line and "xf32>" in line for line in dots)


def test_attention_offsets_are_64_bit(compiled):
    """16 sequences x 32 heads x 32k positions x head_dim 128 is 2^31 elements: every offset
    derived from a program id is an i64 product, read off the TTIR, not allocated."""
    result, ttir = compiled
    assert result.returncode == 0, result.stderr[-3000:]
    assert {name: narrow_products(text) for name, text in ttir.items()} == \
        {name: [] for name in ttir}
