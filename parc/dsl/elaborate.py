"""Elaborates a model: binds hyperparameters, unrolls loops, inlines defs, infers every shape.

The result is a flat list of primitive ops over typed tensors with scoped parameter names, which
is what the checker reports on and what the compiler's IR is built from.
"""

from __future__ import annotations

from ..ops.dims import Dim
from ..ops.types import DTYPES, TensorT
from . import ast
from .calls import CallMixin
from .names import Namespace, suggestion
from .spec import InputInfo, ModelSpec, OpInfo, ParamInfo, TopScope
from .values import POISON, Abort, Frame, Tensor, Value, describe

MAX_LOOP_TRIPS = 100_000
FREE_DIM = "batch"


class Elaborator(CallMixin):
    def __init__(self, spaces: dict[str, Namespace], report):
        self.spaces = spaces
        self.report = report  # the checker's reporter: (code, message, span, help, note) -> POISON
        self.calls: list[tuple[str, ast.Span | None]] = []  # the def calls being inlined
        self.output_spans: dict[str, ast.Span | None] = {}
        self.values: dict[int, TensorT] = {}
        self.ops: list[OpInfo] = []
        self.params: list[ParamInfo] = []
        self.param_names: dict[str, ast.Span | None] = {}
        self.inputs: list[InputInfo] = []
        self.scopes: list[TopScope] = []
        self.outputs: dict[str, int] = {}

    def err(self, code: str, message: str, span: ast.Span | None, help: str | None = None):
        """Report a diagnostic; inside an inlined def, note the call that led there."""
        note = None
        if self.calls:
            outer, site = self.calls[0]
            inner = self.calls[-1][0]
            if site is not None and (span is None or (span.file, span.line) != (site.file,
                                                                                 site.line)):
                via = f" (through `{outer}`)" if outer != inner else ""
                note = f"in `{inner}`{via}, called at {site}"
        return self.report(code, message, span, help, note)

    def new_tensor(self, type_: TensorT) -> Tensor:
        tensor = Tensor(len(self.values), type_)
        self.values[tensor.id] = type_
        return tensor

    # ---- model
    def model(self, node: ast.Model, module: str, overrides: dict[str, Value]) -> ModelSpec:
        env: dict[str, Value] = {}
        hyper: dict[str, object] = {}
        for param in node.params:
            if param.name in overrides:
                value = overrides[param.name]
            elif param.default is None:
                value = self.err("E180", f"model parameter `{param.name}` needs a default value",
                                 param.span, help=f"write `{param.name} = VALUE`")
            else:
                value = self.expr(Frame(module, "", env, True), param.default)
            if value is not POISON and not isinstance(value, Dim | float | bool):
                value = self.err("E180", f"model parameter `{param.name}` must be a number or a "
                                 f"boolean, not {describe(value)}", param.span)
            env[param.name] = value
            if isinstance(value, Dim) and value.is_int:
                hyper[param.name] = value.as_int()
            elif isinstance(value, float | bool):
                hyper[param.name] = value
        frame = Frame(module, "", env, is_model=True)
        try:
            self.stmts(frame, node.body)
        except Abort:
            pass
        return ModelSpec(node.name, hyper, self.inputs, self.params, self.ops, self.values,
                         self.outputs, self.scopes, node.span, self.output_spans)

    # ---- statements
    def stmts(self, frame: Frame, body: tuple[ast.Stmt, ...]) -> None:
        for stmt in body:
            if frame.returned is not None:
                self.err("E151", "code after `return` never runs", stmt.span)
                return
            self.stmt(frame, stmt)

    def stmt(self, frame: Frame, stmt: ast.Stmt) -> None:
        if isinstance(stmt, ast.Assign):
            self.assign(frame, stmt)
        elif isinstance(stmt, ast.Param):
            self.param(frame, stmt)
        elif isinstance(stmt, ast.For):
            self.loop(frame, stmt)
        elif isinstance(stmt, ast.Input):
            self.input(frame, stmt)
        elif isinstance(stmt, ast.Output):
            self.output(frame, stmt)
        elif isinstance(stmt, ast.Return):
            if frame.is_model:
                self.err("E130", "`return` is only allowed in a def; a model uses `output`",
                         stmt.span)
                return
            frame.returned = tuple(self.expr(frame, e) for e in stmt.values)
        else:  # pragma: no cover - the grammar has no other statement
            raise AssertionError(stmt)

    def assign(self, frame: Frame, stmt: ast.Assign) -> None:
        value = self.expr(frame, stmt.value)
        if len(stmt.targets) == 1:
            if isinstance(value, tuple) and len(value) != 1:
                value = self.err("E150", f"`{stmt.targets[0]}` is assigned {len(value)} values; "
                                 "unpack them with `a, b = ...`", stmt.span)
            elif isinstance(value, tuple):
                value = value[0]
            frame.env[stmt.targets[0]] = value
            return
        if value is POISON:
            values = (POISON,) * len(stmt.targets)
        elif not isinstance(value, tuple) or len(value) != len(stmt.targets):
            count = len(value) if isinstance(value, tuple) else 1
            self.err("E150", f"cannot unpack {count} value{'s' * (count != 1)} into "
                     f"{len(stmt.targets)} names", stmt.span)
            values = (POISON,) * len(stmt.targets)
        else:
            values = value
        for name, item in zip(stmt.targets, values):
            frame.env[name] = item

    def dtype(self, name: str, span: ast.Span | None) -> str | None:
        if name in DTYPES:
            return name
        guess = suggestion_from(name, DTYPES)
        self.err("E140", f"unknown dtype `{name}`", span,
                 help=f"did you mean `{guess}`?" if guess else "dtypes: " + ", ".join(DTYPES))
        return None

    def tensor_type(self, frame: Frame, node: ast.TensorType, allow_free: bool) -> TensorT | None:
        dtype = self.dtype(node.dtype, node.span)
        dims: list[Dim] = []
        ok = dtype is not None
        for expr in node.dims:
            if allow_free and isinstance(expr, ast.Name) and expr.dotted == FREE_DIM \
                    and FREE_DIM not in frame.env:
                dims.append(Dim.symbol(FREE_DIM))
                continue
            value = self.expr(frame, expr)
            if value is POISON:
                ok = False
            elif not isinstance(value, Dim):
                self.err("E210", f"a dimension must be an integer, not {describe(value)}",
                         expr.span)
                ok = False
            elif value.is_const and (not value.is_int or value.as_int() <= 0):
                self.err("E211", f"a dimension must be a positive integer, not {value}",
                         expr.span)
                ok = False
            else:
                dims.append(value)
        return TensorT(dtype, tuple(dims)) if ok else None

    def input(self, frame: Frame, stmt: ast.Input) -> None:
        if not frame.is_model:
            self.err("E130", "`input` is only allowed in a model; pass tensors to a def as "
                     "arguments", stmt.span)
            return
        if any(i.name == stmt.name for i in self.inputs):
            self.err("E131", f"input `{stmt.name}` is declared twice", stmt.span)
            return
        type_ = self.tensor_type(frame, stmt.type, allow_free=True)
        if type_ is None:
            frame.env[stmt.name] = POISON
            return
        tensor = self.new_tensor(type_)
        next_of = self.input_source(stmt, type_) if stmt.source is not None else None
        self.inputs.append(InputInfo(stmt.name, tensor.id, type_, next_of=next_of,
                                     span=stmt.span))
        frame.env[stmt.name] = tensor

    def input_source(self, stmt: ast.Input, type_: TensorT) -> str | None:
        """`= next(tokens)`: the input is an earlier integer input of the same shape, shifted
        one position along the sequence (the next-token targets of a language model)."""
        e = stmt.source
        if not (isinstance(e, ast.Call) and e.func.dotted == "next" and len(e.args) == 1
                and not e.kwargs and isinstance(e.args[0], ast.Name)):
            self.err("E133", f"input `{stmt.name}` can only be declared as another input "
                     "shifted by one: `= next(INPUT)`", e.span,
                     help=f"e.g. `input {stmt.name}: {type_} = next(tokens)`")
            return None
        source = e.args[0].dotted
        earlier = next((i for i in self.inputs if i.name == source), None)
        if earlier is None:
            self.err("E133", f"`next({source})`: `{source}` is not an input declared before "
                     f"`{stmt.name}`", e.args[0].span)
            return None
        if not (type_.is_int and earlier.type.is_int) or type_.shape != earlier.type.shape \
                or type_.rank < 2:
            self.err("E133", f"`{stmt.name}` = next(`{source}`) needs two integer inputs of one "
                     f"shape [batch, seq, ...]; they are {type_} and {earlier.type}", e.span)
            return None
        return source

    def param(self, frame: Frame, stmt: ast.Param) -> None:
        name = f"{frame.scope}.{stmt.name}" if frame.scope else stmt.name
        type_ = self.tensor_type(frame, stmt.type, allow_free=False)
        init = self.init(frame, stmt.init)
        if type_ is not None and not type_.is_float:
            self.err("E212", f"parameter `{stmt.name}` must have a floating-point dtype, "
                     f"not {type_.dtype}", stmt.type.span)
            type_ = None
        if type_ is not None and not all(d.is_int for d in type_.shape):
            self.err("E212", f"parameter `{stmt.name}` has shape {type_}: parameter dimensions "
                     "must be known integers", stmt.type.span)
            type_ = None
        if name in self.param_names:
            first = self.param_names[name]
            where = f" (first at {first.file}:{first.line})" if first else ""
            self.err("E132", f"parameter `{name}` is declared twice{where}", stmt.span,
                     help="give one of the calls that declare it a distinct `as NAME`")
            frame.env[stmt.name] = POISON
            return
        self.param_names[name] = stmt.span
        if type_ is None or init is None:
            frame.env[stmt.name] = POISON
            return
        tensor = self.new_tensor(type_)
        self.params.append(ParamInfo(name, tensor.id, type_, init, stmt.span))
        frame.env[stmt.name] = tensor

    def init(self, frame: Frame, expr: ast.Expr | None) -> tuple[str, tuple[float, ...]] | None:
        inits = {"normal": 1, "uniform": 1, "zeros": 0, "ones": 0}
        if expr is None:
            return ("normal", (0.02,))
        if isinstance(expr, ast.Name) and expr.dotted in inits:
            func, args, span = expr.dotted, (), expr.span
        elif isinstance(expr, ast.Call) and expr.func.dotted in inits and not expr.kwargs:
            func, args, span = expr.func.dotted, expr.args, expr.span
        else:
            self.err("E141", "an init is `normal(std)`, `uniform(bound)`, `zeros` or `ones`",
                     expr.span)
            return None
        if len(args) != inits[func]:
            self.err("E141", f"`{func}` takes {inits[func]} argument{'s' * (inits[func] != 1)}",
                     span)
            return None
        values = []
        for arg in args:
            value = self.expr(frame, arg)
            if isinstance(value, Dim) and value.is_const:
                value = float(value.const)
            if not isinstance(value, float) or value < 0:
                if value is not POISON:
                    self.err("E141", f"`{func}` needs a non-negative number, not "
                             f"{describe(value)}", arg.span)
                return None
            values.append(value)
        return (func, tuple(values))

    def loop(self, frame: Frame, stmt: ast.For) -> None:
        bounds = []
        for expr in (stmt.start, stmt.stop):
            value = self.expr(frame, expr)
            if value is POISON:
                return
            if not isinstance(value, Dim) or not value.is_int:
                self.err("E160", f"loop bounds must be integers, not {describe(value)}", expr.span)
                return
            bounds.append(value.as_int())
        start, stop = bounds
        if stop - start > MAX_LOOP_TRIPS:
            self.err("E161", f"the loop runs {stop - start} times; the limit is {MAX_LOOP_TRIPS}",
                     stmt.span)
            raise Abort
        for i in range(start, stop):
            frame.env[stmt.var] = Dim.of(i)
            frame.loop_index.append(i)
            try:
                self.stmts(frame, stmt.body)
            finally:
                frame.loop_index.pop()
            if frame.returned is not None:
                return

    def output(self, frame: Frame, stmt: ast.Output) -> None:
        if not frame.is_model:
            self.err("E130", "`output` is only allowed in a model; a def uses `return`",
                     stmt.span)
            return
        if stmt.value is not None:
            frame.env[stmt.name] = self.expr(frame, stmt.value)
        if stmt.name not in frame.env:
            self.err("E110", f"`{stmt.name}` is not defined", stmt.span,
                     help=suggestion_from(stmt.name, frame.env, "did you mean `{}`?"))
            return
        value = frame.env[stmt.name]
        if value is POISON:
            return
        if not isinstance(value, Tensor):
            self.err("E170", f"an output must be a tensor; `{stmt.name}` is {describe(value)}",
                     stmt.span)
            return
        if stmt.name in self.outputs:
            self.err("E171", f"output `{stmt.name}` is declared twice", stmt.span)
            return
        self.outputs[stmt.name] = value.id
        self.output_spans[stmt.name] = stmt.span

    # ---- expressions
    def expr(self, frame: Frame, e: ast.Expr) -> Value:
        if isinstance(e, ast.Int):
            return Dim.of(e.value)
        if isinstance(e, ast.Float):
            return e.value
        if isinstance(e, ast.Bool | ast.Str):
            return e.value
        if isinstance(e, ast.Name):
            return self.name(frame, e)
        if isinstance(e, ast.BinOp):
            return self.binop(frame, e)
        if isinstance(e, ast.Neg):
            value = self.expr(frame, e.operand)
            if isinstance(value, Dim):
                return -value
            if isinstance(value, float) and not isinstance(value, bool):
                return -value
            if isinstance(value, Tensor):
                return self.primitive_apply("scale", [value], {"factor": -1.0}, frame, e.span)
            if value is POISON:
                return POISON
            return self.err("E200", f"cannot negate {describe(value)}", e.span)
        if isinstance(e, ast.List):
            return [self.expr(frame, item) for item in e.items]
        if isinstance(e, ast.Call):
            return self.call(frame, e)
        if isinstance(e, ast.Quantity):
            return self.err("E142", f"a unit (`{e.unit}`) is only allowed in hardware settings",
                            e.span)
        raise AssertionError(e)  # pragma: no cover

    def name(self, frame: Frame, e: ast.Name) -> Value:
        if len(e.parts) == 1 and e.dotted in frame.env:
            return frame.env[e.dotted]
        help = suggestion_from(e.dotted, frame.env, "did you mean `{}`?")
        if e.dotted == FREE_DIM and frame.is_model:
            help = "`batch` may only be used as a dimension of an `input`"
        return self.err("E110", f"`{e.dotted}` is not defined", e.span, help=help)

    def binop(self, frame: Frame, e: ast.BinOp) -> Value:
        left, right = self.expr(frame, e.left), self.expr(frame, e.right)
        if left is POISON or right is POISON:
            return POISON
        if isinstance(left, Dim) and isinstance(right, Dim):
            return self.dim_arith(e, left, right)
        if _is_number(left) and _is_number(right):
            a, b = _as_float(left), _as_float(right)
            if e.op == "/" and b == 0:
                return self.err("E201", "division by zero", e.span)
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[e.op]
        if isinstance(left, Tensor) and isinstance(right, Tensor):
            kind = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[e.op]
            return self.primitive_apply(kind, [left, right], {}, frame, e.span,
                                        operand_spans=[e.left.span, e.right.span])
        if isinstance(left, Tensor) and _is_number(right) and e.op in "*/":
            factor = _as_float(right)
            if e.op == "/" and factor == 0:
                return self.err("E201", "division by zero", e.right.span)
            factor = factor if e.op == "*" else 1.0 / factor
            return self.primitive_apply("scale", [left], {"factor": factor}, frame, e.span)
        if _is_number(left) and isinstance(right, Tensor) and e.op == "*":
            return self.primitive_apply("scale", [right], {"factor": _as_float(left)}, frame,
                                        e.span)
        return self.err("E200", f"cannot apply `{e.op}` to {describe(left)} and "
                        f"{describe(right)}", e.span)

    def dim_arith(self, e: ast.BinOp, left: Dim, right: Dim) -> Value:
        if e.op == "+":
            return left + right
        if e.op == "-":
            return left - right
        if e.op == "*":
            return left * right
        if right == Dim.of(0):
            return self.err("E201", "division by zero", e.right.span)
        quotient = left.divide(right)
        if quotient is None or (left.is_int and right.is_int and not quotient.is_int):
            return self.err("E201", f"{left} / {right} is not a whole number", e.span,
                            help="dimensions must divide exactly")
        return quotient


def _is_number(value: Value) -> bool:
    return (isinstance(value, float) and not isinstance(value, bool)) or \
        (isinstance(value, Dim) and value.is_const)


def _as_float(value: Value) -> float:
    return float(value.const) if isinstance(value, Dim) else float(value)


def suggestion_from(name: str, candidates, template: str = "{}") -> str | None:
    from .diagnostics import closest

    guess = closest(name, [c for c in candidates if isinstance(c, str)])
    return template.format(guess) if guess else None


__all__ = ["Elaborator", "Frame", "suggestion", "suggestion_from"]
