"""Every primitive's torch lowering runs and gives the shape its shape rule predicts."""

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the lowerings are written against `F`

from parc.ops.catalog import CATALOG
from parc.ops.dims import Dim
from parc.ops.lowering import TORCH_DTYPES, torch_lowering, triton_lowering
from parc.ops.types import TensorT
from parc.runtime.functional import causal_attention, causal_softmax, dropout, rope

CASES = {
    "matmul": ([(2, 5, 8), (8, 3)], {}),
    "add": ([(2, 5, 8), (5, 8)], {}), "sub": ([(2, 8), (2, 8)], {}),
    "mul": ([(2, 8), (8,)], {}), "div": ([(2, 8), (2, 8)], {}),
    "scale": ([(3, 4)], {"factor": 0.5}),
    "gelu": ([(3, 4)], {}), "silu": ([(3, 4)], {}), "relu": ([(3, 4)], {}),
    "tanh": ([(3, 4)], {}), "sigmoid": ([(3, 4)], {}), "exp": ([(3, 4)], {}),
    "layer_norm": ([(2, 3, 8), (8,), (8,)], {}), "rms_norm": ([(2, 3, 8), (8,)], {}),
    "softmax": ([(2, 7)], {}), "embedding": ([("i64", 2, 5), (11, 6)], {}),
    "rope": ([(2, 4, 5, 8)], {}), "split_heads": ([(2, 5, 12)], {"heads": 3}),
    "merge_heads": ([(2, 3, 5, 4)], {}), "transpose": ([(2, 3, 5)], {}),
    "reshape": ([(4, 6)], {"shape": [Dim.of(24)], "shape_local": [24]}),
    "split": ([(2, 9)], {"parts": 3}),
    "causal_attention": ([(2, 4, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8)], {}),
    "cross_entropy": ([(2, 5, 11), ("i64", 2, 5)], {}),
    "sum": ([(3, 4)], {}), "mean": ([(3, 4)], {}),
    "dropout": ([(3, 4)], {"p": 0.25}),
}


def test_every_op_has_a_case():
    assert set(CASES) == set(CATALOG)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_lowering_matches_shape_rule(kind):
    shapes, given = CASES[kind]
    types, tensors = [], []
    for shape in shapes:
        dtype = shape[0] if isinstance(shape[0], str) else "f32"
        dims = shape[1:] if isinstance(shape[0], str) else shape
        types.append(TensorT(dtype, tuple(Dim.of(d) for d in dims)))
        if dtype == "i64":
            tensors.append(torch.randint(0, 5, dims))
        else:
            tensors.append(torch.randn(dims))
    spec = CATALOG[kind]
    attrs = {name: default for name, default in spec.attrs}
    attrs.update(given)
    expected = spec.infer(types, attrs)
    names = [f"a{i}" for i in range(len(tensors))]
    code = torch_lowering(kind, names, types, attrs)
    env = {"torch": torch, "F": F, "causal_attention": causal_attention,
           "causal_softmax": causal_softmax, "dropout": dropout, "rope": rope}
    env.update(zip(names, tensors))
    result = eval(code, env)  # noqa: S307 - evaluating our own lowering
    results = list(result) if isinstance(result, tuple) else [result]
    assert [tuple(r.shape) for r in results] == [
        tuple(d.as_int() for d in t.shape) for t in expected]
    assert all(str(r.dtype) == TORCH_DTYPES[t.dtype] for r, t in zip(results, expected))


def test_causal_attention_matches_torch_sdpa():
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v), ref, rtol=1e-5, atol=1e-5)


def test_gqa_attention_repeats_key_value_heads():
    q = torch.randn(2, 4, 6, 8)
    k, v = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    ref = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                         is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v), ref, rtol=1e-5, atol=1e-5)


def test_the_attention_kernel_is_chosen_on_cuda_only():
    """The row kernels are the Triton backend's on any device; attention's only on CUDA (on a
    CPU the interpreter would run it, and SDPA stays)."""
    qkv = ["q", "k", "v"]
    assert triton_lowering("causal_attention", qkv, {}, "cuda") == "K.causal_attention(q, k, v)"
    assert triton_lowering("causal_attention", qkv, {}, "cpu") is None
    assert triton_lowering("rope", ["x"], {"theta": 1e4}, "cpu") == "K.rope(x, theta=10000.0)"
    assert triton_lowering("matmul", ["a", "b"], {}, "cuda") is None


def test_causal_softmax_is_unfused_causal_attention():
    """softmax(q k^T / sqrt(hd), causal) v, written out as Megatron-LM did before fused
    attention, equals the fused op."""
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    scores = torch.matmul(q, k.transpose(-2, -1)) / 8 ** 0.5
    attrs = {"dim": -1, "causal": True}
    probs = eval(torch_lowering("softmax", ["s"], [], attrs),  # noqa: S307
                 {"causal_softmax": causal_softmax, "s": scores})
    torch.testing.assert_close(torch.matmul(probs, v), causal_attention(q, k, v),
                               rtol=1e-5, atol=1e-5)
