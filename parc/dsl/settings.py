"""Evaluates setting values (`memory 80 GB`, `optimizer adamw(lr = 3e-4)`) to Python values."""

from __future__ import annotations

from dataclasses import dataclass

from . import ast
from .values import POISON

_PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
UNIT_KINDS = {"bytes": "a size (`B`, `GB`, `GiB`, ...)",
              "bandwidth": "a bandwidth (`GB/s`, `TB/s`, ...)",
              "flops": "a rate of computation (`GFLOPS`, `TFLOPS`, ...)",
              "time": "a time (`s`, `ms`, `us`, `ns`)"}


def unit_of(unit: str) -> tuple[str, float]:
    """(kind, factor to base units) of a unit the grammar accepts."""
    if unit in _TIME:
        return "time", _TIME[unit]
    if unit.endswith("FLOPS"):
        return "flops", _PREFIX[unit[:-5]]
    if unit.endswith("B/s"):
        return "bandwidth", _PREFIX[unit[:-3]]
    assert unit.endswith("B"), unit
    return "bytes", _PREFIX[unit[:-1]]


@dataclass(frozen=True)
class Ident:
    """A bare word in a setting: `cpu`, `bf16`, `all`."""

    name: str


@dataclass(frozen=True)
class Quantity:
    value: float
    kind: str


@dataclass(frozen=True)
class CallValue:
    name: str
    args: tuple
    kwargs: tuple[tuple[str, object, ast.Span | None], ...]
    span: ast.Span | None


class SettingEvaluator:
    """Constant evaluation over an environment of header parameters."""

    def __init__(self, err, env: dict[str, object] | None = None):
        self.err = err
        self.env = dict(env or {})

    def value(self, expr: ast.Expr) -> object:
        if isinstance(expr, ast.Int | ast.Float | ast.Bool | ast.Str):
            return expr.value
        if isinstance(expr, ast.Name):
            if len(expr.parts) == 1 and expr.dotted in self.env:
                return self.env[expr.dotted]
            return Ident(expr.dotted)
        if isinstance(expr, ast.Quantity):
            number = self.value(expr.value)
            if number is POISON:
                return POISON
            if not is_number(number):
                return self.err("E142", f"a unit must follow a number, not `{expr.value}`",
                                expr.span)
            kind, factor = unit_of(expr.unit)
            return Quantity(float(number) * factor, kind)
        if isinstance(expr, ast.Neg):
            number = self.value(expr.operand)
            if is_number(number):
                return -number
            return POISON if number is POISON else self.err("E200", "cannot negate this value",
                                                            expr.span)
        if isinstance(expr, ast.BinOp):
            a, b = self.value(expr.left), self.value(expr.right)
            if a is POISON or b is POISON:
                return POISON
            if not (is_number(a) and is_number(b)):
                return self.err("E200", f"cannot apply `{expr.op}` here", expr.span)
            if expr.op == "/":
                if b == 0:
                    return self.err("E201", "division by zero", expr.span)
                quotient = a / b
                return int(quotient) if isinstance(a, int) and isinstance(b, int) and \
                    a % b == 0 else quotient
            return {"+": a + b, "-": a - b, "*": a * b}[expr.op]
        if isinstance(expr, ast.Call):
            return CallValue(expr.func.dotted, tuple(self.value(a) for a in expr.args),
                             tuple((k.name, self.value(k.value), k.span) for k in expr.kwargs),
                             expr.span)
        if isinstance(expr, ast.List):
            return [self.value(item) for item in expr.items]
        raise AssertionError(expr)  # pragma: no cover


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- rules: each takes (values, span, err) and returns the converted value or POISON -------


def _single(values, span, err, what):
    if len(values) != 1:
        err("E145", f"`{what}` takes one value, got {len(values)}", span)
        return POISON
    return values[0]


def positive_int(values, span, err, key):
    value = _single(values, span, err, key)
    if value is POISON:
        return POISON
    if not is_int(value) or value <= 0:
        return err("E146", f"`{key}` must be a positive integer, not {show(value)}", span)
    return value


def non_negative_int(values, span, err, key):
    value = _single(values, span, err, key)
    if value is POISON:
        return POISON
    if not is_int(value) or value < 0:
        return err("E146", f"`{key}` must be a non-negative integer, not {show(value)}", span)
    return value


def positive_number(values, span, err, key):
    value = _single(values, span, err, key)
    if value is POISON:
        return POISON
    if not is_number(value) or value <= 0:
        return err("E146", f"`{key}` must be a positive number, not {show(value)}", span)
    return float(value)


def fraction(values, span, err, key):
    value = _single(values, span, err, key)
    if value is POISON:
        return POISON
    if not is_number(value) or not 0 < value <= 1:
        return err("E146", f"`{key}` must be a number in (0, 1], not {show(value)}", span)
    return float(value)


def quantity(kind: str):
    def rule(values, span, err, key):
        value = _single(values, span, err, key)
        if value is POISON:
            return POISON
        if is_number(value):
            return err("E147", f"`{key}` needs a unit: {UNIT_KINDS[kind]}", span,
                       help=f"for example `{key} {value} {_EXAMPLE_UNIT[kind]}`")
        if not isinstance(value, Quantity) or value.kind != kind:
            return err("E147", f"`{key}` must be {UNIT_KINDS[kind]}, not {show(value)}", span)
        if value.value <= 0:
            return err("E146", f"`{key}` must be positive", span)
        return value.value
    return rule


def ident(*choices: str):
    def rule(values, span, err, key):
        value = _single(values, span, err, key)
        if value is POISON:
            return POISON
        if not isinstance(value, Ident) or value.name not in choices:
            return err("E148", f"`{key}` must be one of {', '.join(choices)}; got {show(value)}",
                       span)
        return value.name
    return rule


def boolean(values, span, err, key):
    value = _single(values, span, err, key)
    if value is POISON:
        return POISON
    if not isinstance(value, bool):
        return err("E148", f"`{key}` must be true or false, not {show(value)}", span)
    return value


_EXAMPLE_UNIT = {"bytes": "GB", "bandwidth": "GB/s", "flops": "TFLOPS", "time": "us"}


def show(value) -> str:
    if isinstance(value, Ident):
        return f"`{value.name}`"
    if isinstance(value, Quantity):
        return {"bytes": "a size", "bandwidth": "a bandwidth", "flops": "a rate of computation",
                "time": "a time"}[value.kind]
    if isinstance(value, CallValue):
        return f"`{value.name}(...)`"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "a list"
    return f"`{value}`"


def read_settings(settings, schema: dict, evaluator: SettingEvaluator, err, where: str) -> dict:
    """Apply `schema` (key -> rule) to settings; report unknown and repeated keys."""
    from .diagnostics import closest

    out: dict[str, object] = {}
    spans: dict[str, object] = {}
    for setting in settings:
        if setting.key not in schema:
            guess = closest(setting.key, schema)
            err("E143", f"unknown setting `{setting.key}` in {where}", setting.span,
                help=f"did you mean `{guess}`?" if guess else
                "settings: " + ", ".join(sorted(schema)))
            continue
        if setting.key in spans:
            err("E144", f"`{setting.key}` is set twice in {where}", setting.span)
            continue
        spans[setting.key] = setting.span
        values = [evaluator.value(v) for v in setting.values]
        if any(v is POISON for v in values):
            continue
        value = schema[setting.key](values, setting.span, err, setting.key)
        if value is not POISON:
            out[setting.key] = value
    out["__spans__"] = spans
    return out
