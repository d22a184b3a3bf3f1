"""Structural tensor parallelism: which weights to split over `tp`, read off the graph.

Redco's rules ("Redco: a lightweight tool to automate distributed training"), in Megatron's
layout: a matmul whose result reaches another matmul through elementwise ops only is split by
columns (its bias with it) and the second by rows, so the pair needs one all-reduce; attention's
projections into `split_heads` are split by heads and the one after `merge_heads` by rows, when
every head count divides by tp; an embedding table and the head matmul into `cross_entropy`
are split by vocabulary. Everything else stays replicated. Names play no part: a parameter is
found by the op that reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .ir import Graph, Op

UNARY = {"gelu", "silu", "relu", "tanh", "sigmoid", "exp", "dropout", "scale"}
BINARY = {"add", "sub", "mul", "div"}
HEADWISE = {"rope", "causal_attention", "softmax", "transpose", "matmul"} | UNARY | BINARY


@dataclass(frozen=True)
class Pairing:
    """A column-then-row pair: `column` weights (with `bias`) feed the `row` weight's matmul."""

    kind: str  # "mlp" or "attention"
    column: tuple[tuple[str, int], ...]  # (parameter, the dim that holds its output features)
    bias: tuple[str, ...]
    row: tuple[str, int]  # (parameter, the dim that holds its input features)
    width: int  # the features between the two: what tp splits
    heads: tuple[int, ...]  # attention: the head count of each split_heads (q first)
    through: tuple[str, ...]  # the op kinds between, in graph order
    scope: str  # the row matmul's scope


@dataclass(frozen=True)
class Vocab:
    """A vocabulary layer: an embedding table (dim 0) or the head before cross_entropy."""

    kind: str  # "table" or "head"
    param: str
    dim: int  # the vocabulary dim of the parameter
    size: int
    bias: str | None = None  # the head's bias, split with it


@dataclass(frozen=True)
class Layout:
    """The tensor-parallel split of each parameter for one tp, and why."""

    tp: int
    splits: dict[str, int]  # parameter -> the dim split over tp (absent: replicated)
    pairs: tuple[Pairing, ...]  # the pairs split
    kept: tuple[tuple[Pairing, str], ...]  # pairs left replicated, and why
    vocab: tuple[Vocab, ...]  # vocabulary layers split
    vocab_kept: tuple[tuple[Vocab, str], ...]


class _Graph:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.producer = graph.producers()
        self.consumers = graph.consumers()
        self.params = {p.name for p in graph.params}

    def size(self, value: str, dim: int) -> int | None:
        shape = self.graph.values[value].type.shape
        return shape[dim].as_int() if -len(shape) <= dim < len(shape) else None

    def weight(self, value: str) -> tuple[str, bool, Op | None] | None:
        """(parameter, transposed, the transpose op) when `value` is a matrix parameter read
        as a matmul's right operand, directly or through one transpose."""
        if value in self.params and self.graph.values[value].type.rank == 2:
            return value, False, None
        op = self.producer.get(value)
        if op is not None and op.kind == "transpose" and op.inputs[0] in self.params and \
                self.graph.values[op.inputs[0]].type.rank == 2:
            return op.inputs[0], True, op
        return None


class _Trace:
    """The ops between a row matmul and the column matmuls that feed it."""

    def __init__(self, g: _Graph, width: int):
        self.g, self.width = g, width
        self.ops: dict[str, Op] = {}  # keyed by first output
        self.leaves: set[str] = set()  # the column matmuls and their weights' transposes
        self.column: list[tuple[str, int]] = []
        self.bias: list[str] = []
        self.heads: list[int] = []
        self.attention = False

    def visit(self, op: Op) -> bool:
        """Whether to go on (False: seen before)."""
        if op.outputs[0] in self.ops:
            return False
        self.ops[op.outputs[0]] = op
        return True

    def features(self, value: str, inside_heads: bool = False) -> bool:
        """`value` ([..., width]) is made from column matmuls by elementwise ops."""
        op = self.g.producer.get(value)
        if op is None or self.g.size(value, -1) != self.width:
            return False
        if not self.visit(op):
            return True
        if op.kind == "matmul":
            w = self.g.weight(op.inputs[1])
            if w is None or op.inputs[0] in self.g.params:
                return False
            name, transposed, t = w
            self.leaves.add(op.outputs[0])
            if t is not None:
                self.visit(t)
                self.leaves.add(t.outputs[0])
            self.column.append((name, 0 if transposed else 1))
            return True
        if op.kind == "merge_heads" and not inside_heads:
            self.attention = True
            return self.headwise(op.inputs[0])
        if op.kind in UNARY:
            return self.features(op.inputs[0], inside_heads)
        if op.kind in BINARY:
            for operand in op.inputs:
                if operand in self.g.params:  # a bias or per-feature scale
                    t = self.g.graph.values[operand].type
                    if t.rank != 1 or self.g.size(operand, 0) != self.width:
                        return False
                    self.bias.append(operand)
                elif self.g.graph.values[operand].type.shape != \
                        self.g.graph.values[value].type.shape or \
                        not self.features(operand, inside_heads):
                    return False
            return True
        return False

    def headwise(self, value: str) -> bool:
        """`value` ([..., heads, seq, hd]) is computed head by head from split_heads."""
        op = self.g.producer.get(value)
        if op is None:
            return False
        if not self.visit(op):
            return True
        rank = self.g.graph.values[value].type.rank
        if op.kind == "split_heads":
            self.heads.append(int(op.attr("heads")))
            source = op.inputs[0]
            width = self.g.size(source, -1)
            inner = _Trace(self.g, width) if width is not None else None
            if inner is None:
                return False
            inner.ops, inner.leaves = self.ops, self.leaves  # one set for the consumer check
            if not inner.features(source, inside_heads=True):
                return False
            self.column += inner.column
            self.bias += inner.bias
            return True
        if op.kind not in HEADWISE or any(i in self.g.params for i in op.inputs):
            return False
        if op.kind == "softmax" and op.attr("dim", -1) % rank == rank - 3:
            return False
        if op.kind == "transpose" and {op.attr("dim0", -2) % rank,
                                       op.attr("dim1", -1) % rank} != {rank - 2, rank - 1}:
            return False
        if op.kind in BINARY and any(self.g.graph.values[i].type.shape !=
                                     self.g.graph.values[value].type.shape for i in op.inputs):
            return False
        return all(self.headwise(i) for i in op.inputs)


def _sole_reader(g: _Graph, param: str, allowed: set[str]) -> bool:
    return all(op.outputs[0] in allowed for op, _ in g.consumers.get(param, []))


def find_pairs(graph: Graph, taken: set[str] = frozenset()) -> list[Pairing]:
    """Every column-then-row pair of the graph, in graph order; a weight is in one pair at
    most (the first), and `taken` ones (the vocabulary's) in none."""
    g = _Graph(graph)
    used = set(taken)
    out = []
    for op in graph.ops:
        if op.kind != "matmul" or op.inputs[0] in g.params:
            continue
        row = g.weight(op.inputs[1])
        width = g.size(op.inputs[0], -1)
        if row is None or width is None:
            continue
        trace = _Trace(g, width)
        if not trace.features(op.inputs[0]) or not trace.column:
            continue
        # the values between go nowhere else, and each weight has no other reader
        inside = set(trace.ops) | {op.outputs[0]}
        if row[2] is not None:
            inside.add(row[2].outputs[0])
        if any(c.outputs[0] not in inside for v in trace.ops for c, _ in g.consumers.get(v, [])):
            continue
        names = [n for n, _ in trace.column] + trace.bias + [row[0]]
        if len(set(names)) != len(names) or used & set(names):
            continue
        if not all(_sole_reader(g, n, inside) for n in names):
            continue
        used |= set(names)
        between = tuple(o.kind for o in graph.ops
                        if o.outputs[0] in trace.ops and o.outputs[0] not in trace.leaves)
        out.append(Pairing("attention" if trace.attention else "mlp", tuple(trace.column),
                           tuple(trace.bias), (row[0], 1 if row[1] else 0), width,
                           tuple(trace.heads), between, op.scope))
    return out


def find_vocab(graph: Graph) -> list[Vocab]:
    """Embedding tables, and the untied head weight (and bias) whose logits go to
    cross_entropy."""
    g = _Graph(graph)
    tables = []
    for op in graph.ops:
        if op.kind == "embedding" and op.inputs[1] in g.params:
            size = g.size(op.inputs[1], 0)
            if size is not None and op.inputs[1] not in {t.param for t in tables}:
                tables.append(Vocab("table", op.inputs[1], 0, size))
    names = {t.param for t in tables}
    heads = []
    for op in graph.ops:
        if op.kind != "cross_entropy":
            continue
        logits, bias = op.inputs[0], None
        made = g.producer.get(logits)
        if made is not None and made.kind == "add":
            params = [i for i in made.inputs if i in g.params]
            others = [i for i in made.inputs if i not in g.params]
            if len(params) == 1 and len(others) == 1 and \
                    graph.values[params[0]].type.rank == 1:
                bias, made = params[0], g.producer.get(others[0])
        if made is None or made.kind != "matmul":
            continue
        w = g.weight(made.inputs[1])
        if w is None or w[0] in names:
            continue  # a tied head: the table's split covers it
        dim = 0 if w[1] else 1
        size = g.size(w[0], dim)
        if size is not None:
            heads.append(Vocab("head", w[0], dim, size, bias))
            names.add(w[0])
    return tables + heads


def layout(graph: Graph, tp: int) -> Layout:
    """The split of every parameter over tp: vocabulary layers, then the pairs, where their
    sizes divide by tp."""
    found = find_vocab(graph)
    vocab, vocab_kept = [], []
    for v in found:
        if v.size % tp:
            vocab_kept.append((v, f"vocabulary {v.size} does not divide by tp={tp}"))
        else:
            vocab.append(v)
    splits = {}
    for v in vocab:
        splits[v.param] = v.dim
        if v.bias is not None:
            splits[v.bias] = 0
    pairs, kept = [], []
    for p in find_pairs(graph, {v.param for v in found}):
        why = _indivisible(graph, p, tp)
        if why:
            kept.append((p, why))
            continue
        pairs.append(p)
        splits.update(dict(p.column))
        splits.update({b: 0 for b in p.bias})
        splits[p.row[0]] = p.row[1]
    return Layout(tp, splits, tuple(pairs), tuple(kept), tuple(vocab), tuple(vocab_kept))


def _indivisible(graph: Graph, p: Pairing, tp: int) -> str | None:
    if p.heads and any(h % tp for h in p.heads):
        counts = sorted(set(p.heads), reverse=True)
        what = " and ".join(str(h) for h in counts)
        return f"heads ({what}) do not all divide by tp={tp}"
    for name, dim in p.column + (p.row,) + tuple((b, 0) for b in p.bias):
        size = graph.values[name].type.shape[dim].as_int()
        if size is None or size % tp:
            return f"{name} has {size} features on dim {dim}, which tp={tp} does not divide"
    return None


def query_heads(graph: Graph) -> list[int]:
    """The query head count of each attention found (its largest split_heads count)."""
    return [max(p.heads) for p in find_pairs(graph, {v.param for v in find_vocab(graph)})
            if p.heads]


def _glob(name: str) -> str:
    return re.sub(r"\[\d+\]", "[*]", name)


def _pair_text(p: Pairing, tp: int, split: bool) -> str:
    columns = ", ".join(_glob(n) for n, _ in p.column)
    through = ", ".join(dict.fromkeys(p.through)) or "nothing"
    biases = f" (biases {', '.join(_glob(b) for b in p.bias)} with them)" if p.bias and split \
        else ""
    if p.heads:
        heads = " and ".join(str(h) for h in sorted(set(p.heads), reverse=True))
        how = f" split by heads ({heads} heads over tp={tp})" if split else \
            f" ({heads} heads)"
        return (f"attention: {columns}{how}{biases}, through {through}, into "
                f"{_glob(p.row[0])}" + (" split by rows" if split else ""))
    how = " split by columns" if split else ""
    return (f"{columns}{how}{biases}, through {through} (elementwise), into "
            f"{_glob(p.row[0])}" + (" split by rows" if split else ""))


def explain(found: Layout) -> list[str]:
    """Which matmuls were paired and why, which stayed whole and why; one line per pattern
    (a layer index written `[*]`), with how many places it holds."""
    lines: dict[str, int] = {}

    def add(text: str) -> None:
        lines[text] = lines.get(text, 0) + 1

    for p in found.pairs:
        add(f"paired: {_pair_text(p, found.tp, True)}")
    for p, why in found.kept:
        add(f"left whole: {_pair_text(p, found.tp, False)}: {why}")
    for v in found.vocab:
        what = "embedding table" if v.kind == "table" else "head into cross_entropy"
        add(f"vocabulary: {v.param} ({what}) split by its {v.size} rows of vocabulary"
            if v.dim == 0 else f"vocabulary: {v.param} ({what}) split by its {v.size} "
            "vocabulary columns")
    for v, why in found.vocab_kept:
        add(f"left whole: {v.param}: {why}")
    return [text + (f" ({n} times)" if n > 1 else "") for text, n in lines.items()] + \
        [f"every other parameter is replicated over tp={found.tp}"]
