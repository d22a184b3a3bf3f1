"""The op catalog: every primitive's operands, attributes and shape rule.

This is the single source of truth for a primitive. The checker binds calls and infers shapes
through it; later phases add FLOPs, bytes, SBP signatures and lowerings to the same entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .dims import Dim
from .types import TensorT

REQUIRED = object()


class ShapeError(Exception):
    """A primitive's operands do not fit its shape rule; `operand` indexes the culprit."""

    def __init__(self, message: str, operand: int | None = None):
        super().__init__(message)
        self.operand = operand


@dataclass(frozen=True)
class OpSpec:
    name: str
    operands: tuple[str, ...]
    attrs: tuple[tuple[str, object], ...]  # (name, default or REQUIRED), in positional order
    infer: Callable[[list[TensorT], dict], list[TensorT]]
    doc: str

    def attr_names(self) -> list[str]:
        return [name for name, _ in self.attrs]

    def full_attrs(self, given) -> dict:
        """Every attribute: the given ones (lists for tuples) over the defaults."""
        attrs = {name: default for name, default in self.attrs}
        attrs.update({k: list(v) if isinstance(v, tuple) else v for k, v in dict(given).items()})
        return attrs


def _norm_dim(dim: int, rank: int, operand: int = 0) -> int:
    if not -rank <= dim < rank:
        raise ShapeError(f"dim {dim} is out of range for a tensor of rank {rank}", operand)
    return dim % rank


def _same(a: Dim, b: Dim) -> bool:
    return a == b


def broadcast(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """Numpy broadcasting of two shapes, or None when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else Dim.of(1)
        y = b[-i] if i <= len(b) else Dim.of(1)
        if _same(x, y) or y == Dim.of(1):
            out.append(x)
        elif x == Dim.of(1):
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


def _shape(t: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in t) + "]"


def _need_float(t: TensorT, operand: int = 0) -> None:
    if not t.is_float:
        raise ShapeError(f"expects a floating-point tensor, got {t}", operand)


def _need_rank(t: TensorT, rank: int, operand: int = 0) -> None:
    if t.rank < rank:
        raise ShapeError(f"expects a tensor of rank at least {rank}, got {t}", operand)


def _same_dtype(ts: list[TensorT]) -> None:
    for i, t in enumerate(ts[1:], start=1):
        if t.dtype != ts[0].dtype:
            raise ShapeError(f"operands have different dtypes: {ts[0].dtype} and {t.dtype}", i)


# ---- shape rules ---------------------------------------------------------------------


def _elementwise_binary(ts, attrs):
    a, b = ts
    _same_dtype(ts)
    shape = broadcast(a.shape, b.shape)
    if shape is None:
        raise ShapeError(f"shapes {_shape(a.shape)} and {_shape(b.shape)} do not broadcast", 1)
    return [TensorT(a.dtype, shape)]


def _elementwise_unary(ts, attrs):
    (x,) = ts
    _need_float(x)
    return [x]


def _dropout(ts, attrs):
    (x,) = ts
    _need_float(x)
    if not 0.0 <= attrs["p"] < 1.0:
        raise ShapeError(f"the dropout probability must be in [0, 1), not {attrs['p']}", 0)
    return [x]


def _matmul(ts, attrs):
    a, b = ts
    _need_float(a, 0)
    _need_float(b, 1)
    _same_dtype(ts)
    _need_rank(a, 2, 0)
    _need_rank(b, 2, 1)
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"inner dimensions differ: {_shape(a.shape)} @ {_shape(b.shape)} "
                         f"({a.shape[-1]} vs {b.shape[-2]})", 1)
    batch = broadcast(a.shape[:-2], b.shape[:-2])
    if batch is None:
        raise ShapeError(f"batch dimensions {_shape(a.shape[:-2])} and {_shape(b.shape[:-2])} "
                         "do not broadcast", 1)
    return [TensorT(a.dtype, batch + (a.shape[-2], b.shape[-1]))]


def _scale(ts, attrs):
    (x,) = ts
    _need_float(x)
    return [x]


def _norm_weight(x: TensorT, w: TensorT, operand: int, what: str) -> None:
    if w.shape != (x.shape[-1],):
        raise ShapeError(f"{what} must have shape [{x.shape[-1]}], got {_shape(w.shape)}", operand)


def _layer_norm(ts, attrs):
    x, w, b = ts
    _need_float(x)
    _need_rank(x, 1)
    _norm_weight(x, w, 1, "weight")
    _norm_weight(x, b, 2, "bias")
    return [x]


def _rms_norm(ts, attrs):
    x, w = ts
    _need_float(x)
    _need_rank(x, 1)
    _norm_weight(x, w, 1, "weight")
    return [x]


def _softmax(ts, attrs):
    (x,) = ts
    _need_float(x)
    dim = _norm_dim(attrs["dim"], x.rank)
    if attrs["causal"]:
        _need_rank(x, 2)
        if dim != x.rank - 1:
            raise ShapeError("a causal softmax normalises the last dimension (keys)")
    return [x]


def _embedding(ts, attrs):
    ids, table = ts
    if not ids.is_int:
        raise ShapeError(f"indices must be an integer tensor, got {ids}", 0)
    if table.rank != 2:
        raise ShapeError(f"table must have rank 2 ([vocab, dim]), got {table}", 1)
    return [TensorT(table.dtype, ids.shape + (table.shape[1],))]


def _rope(ts, attrs):
    (x,) = ts
    _need_float(x)
    _need_rank(x, 2)
    if x.shape[-1].divisible_by(2) is False:
        raise ShapeError(f"the last dimension must be even, got {x.shape[-1]}", 0)
    return [x]


def _split_heads(ts, attrs):
    (x,) = ts
    heads = attrs["heads"]
    _need_rank(x, 2)
    *lead, seq, width = x.shape
    if heads <= 0 or width.divisible_by(heads) is False:
        raise ShapeError(f"width {width} does not split into {heads} heads", 0)
    return [TensorT(x.dtype, tuple(lead) + (Dim.of(heads), seq, width.divide(heads)))]


def _merge_heads(ts, attrs):
    (x,) = ts
    _need_rank(x, 3)
    *lead, heads, seq, head_dim = x.shape
    return [TensorT(x.dtype, tuple(lead) + (seq, heads * head_dim))]


def _transpose(ts, attrs):
    (x,) = ts
    d0, d1 = _norm_dim(attrs["dim0"], x.rank), _norm_dim(attrs["dim1"], x.rank)
    shape = list(x.shape)
    shape[d0], shape[d1] = shape[d1], shape[d0]
    return [TensorT(x.dtype, tuple(shape))]


def _product(shape) -> Dim:
    out = Dim.of(1)
    for d in shape:
        out = out * d
    return out


def _reshape(ts, attrs):
    (x,) = ts
    shape = tuple(Dim.of(d) for d in attrs["shape"])
    if _product(shape) != _product(x.shape):
        raise ShapeError(f"cannot reshape {_shape(x.shape)} into {_shape(shape)}: the number of "
                         "elements differs", 0)
    return [TensorT(x.dtype, shape)]


def _split(ts, attrs):
    (x,) = ts
    parts, dim = attrs["parts"], _norm_dim(attrs["dim"], x.rank)
    if parts <= 0 or x.shape[dim].divisible_by(parts) is False:
        raise ShapeError(f"dimension {dim} of size {x.shape[dim]} does not split into {parts} "
                         "equal parts", 0)
    shape = list(x.shape)
    shape[dim] = x.shape[dim].divide(parts)
    return [TensorT(x.dtype, tuple(shape))] * parts


def _causal_attention(ts, attrs):
    q, k, v = ts
    for i, t in enumerate(ts):
        _need_float(t, i)
        _need_rank(t, 3, i)
    _same_dtype(ts)
    if k.shape != v.shape:
        raise ShapeError(f"keys {_shape(k.shape)} and values {_shape(v.shape)} differ", 2)
    if q.shape[:-3] != k.shape[:-3] or q.shape[-2:] != k.shape[-2:]:
        raise ShapeError(f"queries {_shape(q.shape)} and keys {_shape(k.shape)} must agree in "
                         "every dimension but heads ([..., heads, seq, head_dim])", 1)
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if heads.is_int and kv_heads.is_int and heads.as_int() % kv_heads.as_int() != 0:
        raise ShapeError(f"{heads} query heads do not group over {kv_heads} key/value heads", 1)
    return [q]


def _cross_entropy(ts, attrs):
    logits, targets = ts
    _need_float(logits, 0)
    if not targets.is_int:
        raise ShapeError(f"targets must be an integer tensor, got {targets}", 1)
    if logits.shape[:-1] != targets.shape:
        raise ShapeError(f"logits {_shape(logits.shape)} need targets of shape "
                         f"{_shape(logits.shape[:-1])}, got {_shape(targets.shape)}", 1)
    return [TensorT("f32", ())]


def _reduce(ts, attrs):
    (x,) = ts
    return [TensorT(x.dtype, ())]


def _op(name, operands, infer, doc, **attrs) -> OpSpec:
    return OpSpec(name, tuple(operands), tuple(attrs.items()), infer, doc)


CATALOG: dict[str, OpSpec] = {
    spec.name: spec
    for spec in [
        _op("matmul", ["a", "b"], _matmul, "a @ b with broadcast batch dimensions"),
        _op("add", ["a", "b"], _elementwise_binary, "a + b with broadcasting"),
        _op("sub", ["a", "b"], _elementwise_binary, "a - b with broadcasting"),
        _op("mul", ["a", "b"], _elementwise_binary, "a * b with broadcasting"),
        _op("div", ["a", "b"], _elementwise_binary, "a / b with broadcasting"),
        _op("scale", ["x"], _scale, "x * factor", factor=REQUIRED),
        _op("gelu", ["x"], _elementwise_unary, "GELU (tanh approximation)"),
        _op("silu", ["x"], _elementwise_unary, "x * sigmoid(x)"),
        _op("relu", ["x"], _elementwise_unary, "max(x, 0)"),
        _op("tanh", ["x"], _elementwise_unary, "tanh(x)"),
        _op("sigmoid", ["x"], _elementwise_unary, "1 / (1 + exp(-x))"),
        _op("exp", ["x"], _elementwise_unary, "exp(x)"),
        _op("dropout", ["x"], _dropout, "zero each element with probability p in training, "
            "scale the rest by 1 / (1 - p)", p=REQUIRED),
        _op("layer_norm", ["x", "weight", "bias"], _layer_norm,
            "layer normalisation over the last dimension", eps=1e-5),
        _op("rms_norm", ["x", "weight"], _rms_norm, "RMS normalisation over the last dimension",
            eps=1e-6),
        _op("softmax", ["x"], _softmax,
            "softmax along dim; causal: over [..., seq, seq] scores, keys after the query "
            "masked out", dim=-1, causal=False),
        _op("embedding", ["ids", "table"], _embedding, "rows of table picked by integer ids"),
        _op("rope", ["x"], _rope, "rotary position embedding over [..., seq, head_dim]",
            theta=10000.0),
        _op("split_heads", ["x"], _split_heads, "[..., seq, heads*hd] -> [..., heads, seq, hd]",
            heads=REQUIRED),
        _op("merge_heads", ["x"], _merge_heads, "[..., heads, seq, hd] -> [..., seq, heads*hd]"),
        _op("transpose", ["x"], _transpose, "swap two dimensions", dim0=-2, dim1=-1),
        _op("reshape", ["x"], _reshape, "same elements, new shape", shape=REQUIRED),
        _op("split", ["x"], _split, "equal parts along dim", parts=REQUIRED, dim=-1),
        _op("causal_attention", ["q", "k", "v"], _causal_attention,
            "softmax(q k^T / sqrt(hd) + causal mask) v; k/v may have fewer heads (GQA)"),
        _op("cross_entropy", ["logits", "targets"], _cross_entropy,
            "mean cross-entropy of logits [..., vocab] against integer targets [...]; targets "
            "equal to ignore_index (a padding id; -1: none) count for nothing, the mean is over "
            "the others", ignore_index=-1),
        _op("sum", ["x"], _reduce, "sum of all elements"),
        _op("mean", ["x"], _reduce, "mean of all elements"),
    ]
}

# Python-typed attributes: the checker converts call arguments to these before a shape rule runs.
ATTR_KINDS = {
    "factor": float, "eps": float, "theta": float, "dim": int, "dim0": int, "dim1": int,
    "heads": int, "parts": int, "shape": list, "causal": bool, "p": float,
    "ignore_index": int,
}
