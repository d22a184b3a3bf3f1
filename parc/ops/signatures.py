"""Valid SBP signatures of every primitive, on one mesh axis.

A signature maps the SBP of each operand to the SBP of each result. On an N-D mesh every axis
picks its own signature (ND-SBP); the pipeline axis carries none. Each rule lists every
signature that computes the right result locally, with no communication inside the op.
"""

from __future__ import annotations

from .sbp import BROADCAST as B
from .sbp import PARTIAL as P
from .sbp import Sbp
from .types import TensorT

Signature = tuple[tuple[Sbp, ...], tuple[Sbp, ...]]


def S(dim: int) -> Sbp:  # noqa: N802 - reads like the notation
    return Sbp("S", dim)


def _aligned(operand: TensorT, out: TensorT, dim: int) -> Sbp:
    """The operand's SBP when the broadcast result is split along `dim`."""
    index = dim - (out.rank - operand.rank)
    if index < 0 or (operand.shape[index] != out.shape[dim]):
        return B  # the operand is broadcast along that dim: every rank needs all of it
    return S(index)


def _unary(linear: bool):
    def rule(ins, outs, attrs) -> list[Signature]:
        (x,) = ins
        sigs = [((B,), (B,))] + [((S(k),), (S(k),)) for k in range(x.rank)]
        return sigs + ([((P,), (P,))] if linear else [])
    return rule


def _binary(partial: list[tuple[Sbp, Sbp]]):
    def rule(ins, outs, attrs) -> list[Signature]:
        (out,) = outs
        sigs: list[Signature] = [((B, B), (B,))]
        for k in range(out.rank):
            sbps = tuple(_aligned(t, out, k) for t in ins)
            if any(s.kind == "S" for s in sbps):
                sigs.append((sbps, (S(k),)))
        return sigs + [(pair, (P,)) for pair in partial]
    return rule


def _matmul(ins, outs, attrs) -> list[Signature]:
    a, b = ins
    (out,) = outs
    r = out.rank
    sigs: list[Signature] = [((B, B), (B,))]
    for k in range(r - 2):
        pair = (_aligned(a, out, k), _aligned(b, out, k))
        if any(s.kind == "S" for s in pair):
            sigs.append((pair, (S(k),)))
    sigs += [((S(a.rank - 2), B), (S(r - 2),)), ((B, S(b.rank - 1)), (S(r - 1),)),
             ((S(a.rank - 1), S(b.rank - 2)), (P,)), ((P, B), (P,)), ((B, P), (P,))]
    return sigs


def _rowwise(num_weights: int):
    """Norms: split any dim but the normalised last one; weights stay whole."""
    def rule(ins, outs, attrs) -> list[Signature]:
        x = ins[0]
        weights = (B,) * num_weights
        return [((B,) + weights, (B,))] + [((S(k),) + weights, (S(k),))
                                            for k in range(x.rank - 1)]
    return rule


def _softmax(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    dim = attrs["dim"] % x.rank
    whole = {dim, dim - 1} if attrs.get("causal") else {dim}  # the mask needs positions
    return [((B,), (B,))] + [((S(k),), (S(k),)) for k in range(x.rank) if k not in whole]


def _embedding(ins, outs, attrs) -> list[Signature]:
    ids, _table = ins
    return [((B, B), (B,))] + [((S(k), B), (S(k),)) for k in range(ids.rank)] + [
        ((B, S(1)), (S(ids.rank),)),  # hidden dim split
        ((B, S(0)), (P,)),  # vocab split: each rank looks up its rows, zeros elsewhere
    ]


def _rope(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    return [((B,), (B,))] + [((S(k),), (S(k),)) for k in range(x.rank - 2)]


def _split_heads(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    r = x.rank  # [..., seq, width] -> [..., heads, seq, head_dim]
    sigs = [((B,), (B,)), ((P,), (P,))] + [((S(k),), (S(k),)) for k in range(r - 2)]
    return sigs + [((S(r - 2),), (S(r - 1),)), ((S(r - 1),), (S(r - 2),))]


def _merge_heads(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    r = x.rank  # [..., heads, seq, head_dim] -> [..., seq, heads * head_dim]
    sigs = [((B,), (B,)), ((P,), (P,))] + [((S(k),), (S(k),)) for k in range(r - 3)]
    return sigs + [((S(r - 3),), (S(r - 2),)), ((S(r - 2),), (S(r - 3),))]


def _transpose(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    d0, d1 = attrs["dim0"] % x.rank, attrs["dim1"] % x.rank
    swap = {d0: d1, d1: d0}
    return [((B,), (B,)), ((P,), (P,))] + [((S(k),), (S(swap.get(k, k)),))
                                          for k in range(x.rank)]


def _leading(shape, size) -> bool:
    """Whether some leading dims of `shape` multiply to `size`."""
    product = None
    for d in shape:
        product = d if product is None else product * d
        if product == size:
            return True
    return False


def _reshape(ins, outs, attrs) -> list[Signature]:
    """A split of the first dim survives a reshape that keeps it, merges it with the dims after
    it or splits it into leading dims (row-major order keeps each rank's rows together)."""
    (x,), (out,) = ins, outs
    sigs = [((B,), (B,)), ((P,), (P,))]
    if x.rank and out.rank and (_leading(x.shape, out.shape[0]) or
                                _leading(out.shape, x.shape[0])):
        sigs.append(((S(0),), (S(0),)))
    return sigs


def _split(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    dim = attrs["dim"] % x.rank
    n = len(outs)
    sigs = [((B,), (B,) * n), ((P,), (P,) * n)]
    return sigs + [((S(k),), (S(k),) * n) for k in range(x.rank) if k != dim]


def _attention(ins, outs, attrs) -> list[Signature]:
    q = ins[0]
    r = q.rank  # [..., heads, seq, head_dim]
    return [((B, B, B), (B,))] + [((S(k),) * 3, (S(k),)) for k in range(r - 2)]


def _cross_entropy(ins, outs, attrs) -> list[Signature]:
    logits, _targets = ins
    vocab = logits.rank - 1  # split vocabulary: row max, exp-sum and target logit all-reduced
    return [((B, B), (B,))] + [((S(k), S(k)), (P,)) for k in range(vocab)] + [
        ((S(vocab), B), (B,))]


def _reduce(ins, outs, attrs) -> list[Signature]:
    (x,) = ins
    return [((B,), (B,)), ((P,), (P,))] + [((S(k),), (P,)) for k in range(x.rank)]


RULES = {
    "matmul": _matmul,
    "add": _binary([((P, P))]),
    "sub": _binary([((P, P))]),
    "mul": _binary([(P, B), (B, P)]),
    "div": _binary([(P, B)]),
    "scale": _unary(linear=True),
    "gelu": _unary(linear=False),
    "silu": _unary(linear=False),
    "relu": _unary(linear=False),
    "tanh": _unary(linear=False),
    "sigmoid": _unary(linear=False),
    "exp": _unary(linear=False),
    "dropout": _unary(linear=True),  # a mask times x: the same mask on every rank of a P
    "layer_norm": _rowwise(2),
    "rms_norm": _rowwise(1),
    "softmax": _softmax,
    "embedding": _embedding,
    "rope": _rope,
    "split_heads": _split_heads,
    "merge_heads": _merge_heads,
    "transpose": _transpose,
    "reshape": _reshape,
    "split": _split,
    "causal_attention": _attention,
    "cross_entropy": _cross_entropy,
    "sum": _reduce,
    "mean": _reduce,
}


def context_signatures(kind: str, ins: list[TensorT]) -> list[Signature]:
    """Signatures only the context-parallel axis has: the sequence split of the ops whose
    result depends on positions, computed over the load-balanced layout (attention by ring,
    rope at the rank's global positions)."""
    if kind == "causal_attention":
        seq = S(ins[0].rank - 2)
        return [((seq, seq, seq), (seq,))]
    if kind == "rope":
        seq = S(ins[0].rank - 2)
        return [((seq,), (seq,))]
    return []


def signatures(kind: str, ins: list[TensorT], outs: list[TensorT], attrs: dict) -> list[Signature]:
    """Every valid (operand SBPs, result SBPs) of an op on one axis, B-everywhere first."""
    return RULES[kind](ins, outs, attrs)
