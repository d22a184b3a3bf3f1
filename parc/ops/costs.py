"""FLOPs and bytes of every primitive, forward and backward, on concrete shapes."""

from __future__ import annotations

from dataclasses import dataclass

from .types import DTYPE_BYTES, TensorT


@dataclass(frozen=True)
class OpCost:
    flops_fwd: int
    flops_bwd: tuple[int, ...]  # per operand: FLOPs to compute that operand's gradient
    bytes_fwd: int  # read operands + write results
    bytes_bwd: int


def numel(t: TensorT) -> int:
    n = 1
    for d in t.shape:
        value = d.as_int()
        assert value is not None, f"costs need concrete shapes, got {t}"
        n *= value
    return n


def nbytes(t: TensorT) -> int:
    return numel(t) * DTYPE_BYTES[t.dtype]


# FLOPs per element of the result: forward, backward (per differentiable operand).
ELEMENTWISE = {"add": (1, 1), "sub": (1, 1), "mul": (1, 2), "div": (1, 3), "scale": (1, 1),
               "gelu": (8, 12), "silu": (4, 6), "relu": (1, 1), "tanh": (4, 3),
               "sigmoid": (4, 3), "exp": (1, 1), "layer_norm": (8, 12), "rms_norm": (5, 8),
               "softmax": (5, 4), "rope": (6, 6), "sum": (1, 0), "mean": (1, 0),
               "dropout": (12, 1)}  # the mask is a hash of each element's index
MOVES = {"split_heads", "merge_heads", "transpose", "reshape", "split"}


def op_cost(kind: str, ins: list[TensorT], outs: list[TensorT], attrs: dict) -> OpCost:
    read = sum(nbytes(t) for t in ins)
    written = sum(nbytes(t) for t in outs)
    grads = tuple(0 for _ in ins)
    if kind == "matmul":
        a, b = ins
        (out,) = outs
        m_n = numel(out)
        k = a.shape[-1].as_int()
        fwd = 2 * m_n * k
        return OpCost(fwd, (fwd, fwd), read + written, 2 * (read + written))
    if kind == "causal_attention":
        q, k, _v = ins
        *lead, heads, seq, head_dim = (d.as_int() for d in q.shape)
        batch = 1
        for d in lead:
            batch *= d
        # QK^T and AV over the causal half of the scores.
        fwd = 2 * batch * heads * seq * seq * head_dim
        return OpCost(fwd, (fwd, fwd // 2, fwd // 2), read + written, 2 * (read + written))
    if kind == "cross_entropy":
        logits = ins[0]
        return OpCost(5 * numel(logits), (3 * numel(logits), 0), read, read + nbytes(logits))
    if kind == "embedding":
        (out,) = outs
        return OpCost(0, (0, numel(out)), read + written, 2 * written)
    if kind in MOVES:
        return OpCost(0, grads, read + written, read + written)
    fwd_per, bwd_per = ELEMENTWISE[kind]
    size = max(numel(t) for t in outs + ins)
    return OpCost(fwd_per * size, tuple(bwd_per * numel(t) for t in ins), read + written,
                  2 * (read + written))
