"""Parses the printed IR back into a Graph (`parse_graph(print_graph(g)) == g`)."""

from __future__ import annotations

import re

from ..dsl.ast import Span
from ..ops.dims import Dim
from ..ops.sbp import NdSbp, Sbp
from ..ops.types import TensorT
from .ir import Graph, Op, Param, Value

TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>\#.*)
  | (?P<vref>%[A-Za-z0-9_.\[\]]+)
  | (?P<number>-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|-?inf|nan)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[:,()\[\]{}=@;*/+.-])
""", re.VERBOSE)


class IrSyntaxError(ValueError):
    pass


class _Line:
    def __init__(self, text: str, number: int):
        self.tokens: list[tuple[str, str]] = []
        self.comment: str | None = None
        pos = 0
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m:
                raise IrSyntaxError(f"line {number}: unexpected `{text[pos]}`")
            kind = m.lastgroup
            if kind == "comment":
                self.comment = m.group()[1:].strip()
            elif kind != "space":
                self.tokens.append((kind, m.group()))
            pos = m.end()
        self.i = 0
        self.number = number

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        return value is None or self.tokens[self.i][1] == value

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        if self.i >= len(self.tokens):
            raise IrSyntaxError(f"line {self.number}: unexpected end of line")
        k, v = self.tokens[self.i]
        if (kind and k != kind) or (value and v != value):
            raise IrSyntaxError(f"line {self.number}: expected {value or kind}, found `{v}`")
        self.i += 1
        return v

    def done(self) -> None:
        if self.i != len(self.tokens):
            raise IrSyntaxError(f"line {self.number}: unexpected `{self.tokens[self.i][1]}`")


def _dim(line: _Line) -> Dim:
    """sum of products: `2*batch + 1`, `batch/4`."""
    total = _term(line)
    while line.peek("+") or line.peek("-"):
        sign = line.take()
        term = _term(line)
        total = total + term if sign == "+" else total - term
    return total


def _term(line: _Line) -> Dim:
    value = _factor(line)
    while line.peek("*") or line.peek("/"):
        op = line.take()
        factor = _factor(line)
        value = value * factor if op == "*" else value.divide(factor)
    return value


def _factor(line: _Line) -> Dim:
    kind, text = line.tokens[line.i]
    line.i += 1
    if kind == "number":
        return Dim.of(int(text))
    if kind == "name":
        return Dim.symbol(text)
    if text == "-":
        return -_factor(line)
    raise IrSyntaxError(f"line {line.number}: bad dimension `{text}`")


def _type(line: _Line) -> TensorT:
    dtype = line.take("name")
    line.take(value="[")
    dims = []
    while not line.peek("]"):
        dims.append(_dim(line))
        if not line.peek("]"):
            line.take(value=",")
    line.take(value="]")
    return TensorT(dtype, tuple(dims))


def _sbp(line: _Line) -> Sbp:
    kind = line.take("name")
    if kind == "S":
        line.take(value="(")
        dim = int(line.take("number"))
        line.take(value=")")
        return Sbp("S", dim)
    return Sbp(kind)


def _ndsbp(line: _Line, end: tuple[str, ...]) -> NdSbp:
    axes = []
    while True:
        sbp = _sbp(line)
        line.take(value="@")
        axes.append((line.take("name"), sbp))
        if any(line.peek(e) for e in end) or not line.peek(","):
            return NdSbp(tuple(axes))
        line.take(value=",")


def _value(line: _Line) -> Value:
    name = line.take("vref")[1:]
    line.take(value=":")
    type_ = _type(line)
    sbp, stage, axes = None, None, []
    if line.peek("{"):
        line.take()
        while not line.peek("}"):
            if line.peek("stage"):
                line.take()
                line.take(value="=")
                stage = int(line.take("number"))
            else:
                s = _sbp(line)
                line.take(value="@")
                axes.append((line.take("name"), s))
            if not line.peek("}"):
                line.take(value=",")
        line.take(value="}")
        sbp = NdSbp(tuple(axes)) if axes else None
    return Value(name, type_, sbp, stage)


def _attr_value(line: _Line) -> object:
    if line.peek("["):
        line.take()
        items = []
        while not line.peek("]"):
            items.append(_attr_value(line))
            if not line.peek("]"):
                line.take(value=",")
        line.take(value="]")
        return tuple(Dim.of(v) if isinstance(v, int) else v for v in items)
    kind, text = line.tokens[line.i]
    line.i += 1
    if kind == "number":
        return float(text) if re.search(r"[.eEna]", text) else int(text)
    if text in ("true", "false"):
        return text == "true"
    if kind == "name":
        return text
    raise IrSyntaxError(f"line {line.number}: bad attribute value `{text}`")


def _span(comment: str | None) -> Span | None:
    if not comment:
        return None
    m = re.fullmatch(r"(.+):(\d+):(\d+)", comment)
    if not m:
        return None
    line, col = int(m.group(2)), int(m.group(3))
    return Span(m.group(1), line, col, line, col)


def parse_graph(text: str) -> Graph:
    lines = [(n, t) for n, t in enumerate(text.splitlines(), start=1) if t.strip()]
    if not lines:
        raise IrSyntaxError("empty IR")
    head = _Line(lines[0][1], lines[0][0])
    head.take(value="graph")
    name = head.take("name")
    head.take(value="mesh")
    head.take(value="(")
    mesh = []
    while not head.peek(")"):
        axis = head.take("name")
        head.take(value="=")
        mesh.append((axis, int(head.take("number"))))
        if not head.peek(")"):
            head.take(value=",")
    head.take(value=")")
    bindings = []
    while head.peek():
        key = head.take("name")
        head.take(value="=")
        bindings.append((key, int(head.take("number"))))
    values: dict[str, Value] = {}
    inputs, params, ops, outputs = [], [], [], []
    for number, text_line in lines[1:]:
        line = _Line(text_line, number)
        if line.peek("input"):
            line.take()
            v = _value(line)
            values[v.name] = v
            inputs.append(v.name)
        elif line.peek("param"):
            line.take()
            v = _value(line)
            line.take(value="init")
            func, args = line.take("name"), []
            if line.peek("("):
                line.take()
                while not line.peek(")"):
                    args.append(float(line.take("number")))
                    if not line.peek(")"):
                        line.take(value=",")
                line.take(value=")")
            values[v.name] = v
            params.append(Param(v.name, (func, tuple(args))))
        elif line.peek("output"):
            line.take()
            out = line.take("name")
            line.take(value="=")
            outputs.append((out, line.take("vref")[1:]))
        else:
            ops.append(_op(line, values))
        line.done()
    return Graph(name, tuple(mesh), tuple(bindings), values, tuple(inputs), tuple(params),
                 tuple(ops), tuple(outputs))


def _op(line: _Line, values: dict[str, Value]) -> Op:
    outs = [_value(line)]
    while line.peek(","):
        line.take()
        outs.append(_value(line))
    line.take(value="=")
    kind = line.take("name")
    line.take(value="(")
    inputs = []
    while not line.peek(")"):
        inputs.append(line.take("vref")[1:])
        if not line.peek(")"):
            line.take(value=",")
    line.take(value=")")
    attrs = []
    if line.peek("["):
        line.take()
        while not line.peek("]"):
            key = line.take("name")
            line.take(value="=")
            attrs.append((key, _attr_value(line)))
            if not line.peek("]"):
                line.take(value=",")
        line.take(value="]")
    in_sbp = None
    if line.peek("needs"):
        line.take()
        line.take(value="(")
        in_sbp = [_ndsbp(line, (";", ")"))]
        while line.peek(";"):
            line.take()
            in_sbp.append(_ndsbp(line, (";", ")")))
        line.take(value=")")
        in_sbp = tuple(in_sbp)
    scope = ""
    if line.peek("@"):
        line.take()
        parts = []
        while line.peek():
            parts.append(line.take())
        scope = "".join(parts)
    for v in outs:
        values[v.name] = v
    return Op(kind, tuple(inputs), tuple(v.name for v in outs), tuple(attrs), scope, in_sbp,
              _span(line.comment))
