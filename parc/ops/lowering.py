"""How each primitive is written in torch, as an expression over local (per-rank) tensors.

Lowerings use only quantities that do not change when a tensor is split (head_dim rather
than the head count), so one expression serves every SBP.
"""

from __future__ import annotations

from .types import TensorT

TORCH_DTYPES = {"f32": "torch.float32", "f16": "torch.float16", "bf16": "torch.bfloat16",
                "f64": "torch.float64", "i64": "torch.int64", "i32": "torch.int32",
                "i16": "torch.int16", "i8": "torch.int8", "u8": "torch.uint8",
                "u16": "torch.uint16", "bool": "torch.bool"}


def _head_dim(ins: list[TensorT], attrs: dict) -> int:
    return ins[0].shape[-1].as_int() // attrs["heads"]


TRITON_LIBRARY = {
    "layer_norm": "K.layer_norm({0}, {1}, {2}, eps={eps!r})",
    "rms_norm": "K.rms_norm({0}, {1}, eps={eps!r})",
    "cross_entropy": "K.cross_entropy({0}, {1})",
    "rope": "K.rope({0}, theta={theta!r})",
    "causal_attention": "K.causal_attention({0}, {1}, {2})",
}
# Only where the plan's hardware is a CUDA device: on a CPU the Triton interpreter would run
# attention's blocks of dots one program at a time, far slower than torch's SDPA.
CUDA_ONLY = {"causal_attention"}


def triton_lowering(kind: str, args: list[str], attrs: dict, device: str) -> str | None:
    """The hand-written Triton kernel (parc.stdlib.kernels as K) for an op on the plan's
    hardware `device` ("cuda" or "cpu"), if any."""
    if kind not in TRITON_LIBRARY or (kind in CUDA_ONLY and device != "cuda"):
        return None
    return TRITON_LIBRARY[kind].format(*args, **attrs)


def torch_lowering(kind: str, args: list[str], ins: list[TensorT], attrs: dict) -> str:
    """A torch expression computing the op on local tensors named `args` (`F` is functional)."""
    a = args
    if kind in ("add", "sub", "mul", "div"):
        op = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[kind]
        return f"{a[0]} {op} {a[1]}"
    simple = {
        "matmul": "torch.matmul({0}, {1})",
        "gelu": "F.gelu({0}, approximate='tanh')",
        "silu": "F.silu({0})",
        "relu": "F.relu({0})",
        "tanh": "torch.tanh({0})",
        "sigmoid": "torch.sigmoid({0})",
        "exp": "torch.exp({0})",
        "embedding": "F.embedding({0}, {1})",
        "merge_heads": "{0}.transpose(-3, -2).flatten(-2)",
        "sum": "{0}.sum()",
        "mean": "{0}.mean()",
        "causal_attention": "causal_attention({0}, {1}, {2})",
        "cross_entropy": "F.cross_entropy({0}.flatten(0, -2).float(), {1}.flatten())",
    }
    if kind in simple:
        return simple[kind].format(*a)
    if kind == "scale":
        return f"{a[0]} * {attrs['factor']!r}"
    if kind == "dropout":  # the emitter adds the tensor's place in the whole (codegen/emit.py)
        return f"dropout({a[0]}, p={attrs['p']!r})"
    if kind == "layer_norm":
        return f"F.layer_norm({a[0]}, ({a[0]}.shape[-1],), {a[1]}, {a[2]}, eps={attrs['eps']!r})"
    if kind == "rms_norm":
        return f"F.rms_norm({a[0]}, ({a[0]}.shape[-1],), {a[1]}, eps={attrs['eps']!r})"
    if kind == "softmax":
        if attrs.get("causal"):
            return f"causal_softmax({a[0]})"
        return f"torch.softmax({a[0]}, dim={attrs['dim']})"
    if kind == "rope":
        return f"rope({a[0]}, theta={attrs['theta']!r})"
    if kind == "split_heads":
        return f"{a[0]}.unflatten(-1, (-1, {_head_dim(ins, attrs)})).transpose(-3, -2)"
    if kind == "transpose":
        return f"{a[0]}.transpose({attrs['dim0']}, {attrs['dim1']})"
    if kind == "reshape":
        return f"{a[0]}.reshape({tuple(attrs['shape_local'])})"
    if kind == "split":
        return f"{a[0]}.chunk({attrs['parts']}, dim={attrs['dim']})"
    raise KeyError(f"no torch lowering for `{kind}`")
