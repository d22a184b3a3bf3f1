"""Text -> AST. The grammar is parc/dsl/grammar.lark; one Transformer builds the dataclasses."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from . import ast
from .diagnostics import Diagnostic, ParcError
from .syntax_errors import describe_syntax_error

QUANTITY = re.compile(r"([0-9.eE+-]+?)[ \t]*([KMGTP]?i?(?:B/s|B|FLOPS)|[mun]?s)$")
TOP_LEVEL = re.compile(r"^(use|hardware|def|model|train|parallel)\b")
MAX_SYNTAX_ERRORS = 10
# Deeper nesting would exhaust Python's stack in the transformer and the checker (both
# recurse); no spec needs more than a few dozen levels. Wrapper nodes (a call's arguments, a
# block's body) are not levels of their own, so a tree is at most about twice this deep.
MAX_DEPTH = 150
WRAPPERS = frozenset({"args", "body", "kwarg"})


@functools.lru_cache(maxsize=1)
def grammar() -> Lark:
    text = (Path(__file__).parent / "grammar.lark").read_text()
    return Lark(text, parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True)


def _unquote(token: Token) -> str:
    body = str(token)[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _present(children) -> list:
    return [c for c in children if c is not None]


@v_args(meta=True)
class _Builder(Transformer):
    """Builds AST nodes only: every check lives in check.py."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> ast.Span | None:
        if getattr(meta, "empty", True):
            return None
        return ast.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def _token_span(self, token: Token) -> ast.Span:
        return ast.Span(self.file, token.line, token.column, token.end_line, token.end_column)

    # ---- items
    def start(self, meta, items):
        return ast.Module(self.file, tuple(items))

    def use_module(self, meta, children):
        (name,) = children
        return ast.Use(name.parts, None, self._span(meta))

    def use_file(self, meta, children):
        (path,) = children
        return ast.Use(None, _unquote(path), self._span(meta))

    def hardware_def(self, meta, children):
        name, header, *settings = children
        return ast.HardwareDef(str(name), header or (), tuple(settings), self._span(meta))

    def hardware_inst(self, meta, children):
        name, preset, arglist = children
        args, kwargs = arglist or ((), ())
        return ast.HardwareInst(str(name), preset, args, kwargs, self._span(meta))

    def def_(self, meta, children):
        name, *params, body = children
        return ast.Def(str(name), tuple(_present(params)), body, self._span(meta))

    def def_param(self, meta, children):
        name, pattern, default = children
        return ast.DefParam(str(name), pattern, default, self._span(meta))

    def type_pattern(self, meta, children):
        dtype, *dims = children
        dtype = str(dtype) if dtype else None
        return ast.TypePattern(dtype, tuple(_present(dims)), self._span(meta))

    def pattern_name(self, meta, children):
        return str(children[0])

    def pattern_int(self, meta, children):
        return int(children[0])

    def pattern_star(self, meta, children):
        return "*"

    def model(self, meta, children):
        name, header, body = children
        return ast.Model(str(name), header or (), body, self._span(meta))

    def header(self, meta, children):
        return tuple(_present(children))

    def header_param(self, meta, children):
        name, default = children
        return ast.HeaderParam(str(name), default, self._span(meta))

    # ---- statements
    def body(self, meta, stmts):
        return tuple(stmts)

    def input(self, meta, children):
        name, type_, source = children
        return ast.Input(str(name), type_, source, self._span(meta))

    def param(self, meta, children):
        name, type_, init = children
        return ast.Param(str(name), type_, init, self._span(meta))

    def assign(self, meta, children):
        *targets, value = children
        return ast.Assign(tuple(str(t) for t in targets), value, self._span(meta))

    def for_(self, meta, children):
        var, start, stop, body = children
        return ast.For(str(var), start, stop, body, self._span(meta))

    def output(self, meta, children):
        name, value = children
        return ast.Output(str(name), value, self._span(meta))

    def return_(self, meta, children):
        return ast.Return(tuple(children), self._span(meta))

    def tensor_type(self, meta, children):
        dtype, *dims = children
        return ast.TensorType(str(dtype), tuple(_present(dims)), self._span(meta))

    # ---- train / parallel
    def train(self, meta, settings):
        return ast.Train(tuple(settings), self._span(meta))

    def checkpoint(self, meta, children):
        every, directory = children
        return ast.Checkpoint(every, _unquote(directory), self._span(meta))

    def setting(self, meta, children):
        key, *values = children
        return ast.Setting(str(key), tuple(values), self._span(meta))

    def quantity(self, meta, children):
        (token,) = children
        number, unit = QUANTITY.match(str(token)).groups()
        value = ast.Float(float(number)) if re.search(r"[.eE]", number) else ast.Int(int(number))
        return ast.Quantity(value, unit, self._span(meta))

    def parallel(self, meta, children):
        hardware, *body = children
        return ast.Parallel(str(hardware), tuple(body), self._span(meta))

    def mesh(self, meta, axes):
        return ast.Mesh(tuple(axes), self._span(meta))

    def mesh_axis(self, meta, children):
        name, size = children
        return ast.MeshAxis(str(name), size, self._span(meta))

    def sbp(self, meta, rules):
        return ast.SbpBlock(tuple(rules), self._span(meta))

    def sbp_rule(self, meta, children):
        patterns = tuple(str(c) for c in children if isinstance(c, Token) and c.type == "PATTERN")
        entries = tuple(c for c in children if isinstance(c, ast.SbpEntry))
        return ast.SbpRule(patterns, entries, self._span(meta))

    def sbp_split(self, meta, children):
        _, dim, axis = children
        return ast.SbpEntry("S", int(dim), str(axis) if axis else None, self._span(meta))

    def sbp_broadcast(self, meta, children):
        _, axis = children
        return ast.SbpEntry("B", None, str(axis) if axis else None, self._span(meta))

    def sbp_partial(self, meta, children):
        _, axis = children
        return ast.SbpEntry("P", None, str(axis) if axis else None, self._span(meta))

    def sbp_auto(self, meta, children):
        return ast.SbpEntry("auto", None, None, self._span(meta))

    def parallel_auto(self, meta, children):
        return ast.ParallelAuto(self._span(meta))

    def stages_auto(self, meta, children):
        return ast.StagesAuto(self._span(meta))

    def stage(self, meta, children):
        index, *items = children
        return ast.Stage(int(index), tuple(items), self._span(meta))

    def stage_item(self, meta, children):
        name, start, stop = children
        return ast.StageItem(str(name), start, stop, self._span(meta))

    def schedule(self, meta, children):
        name, arglist = children
        args, kwargs = arglist or ((), ())
        return ast.Schedule(str(name), args, kwargs, self._span(meta))

    # ---- expressions
    def _binop(op):  # noqa: N805 - a factory used while the class body runs
        def build(self, meta, children):
            left, right = children
            return ast.BinOp(op, left, right, self._span(meta))
        return build

    add, sub, mul, div = _binop("+"), _binop("-"), _binop("*"), _binop("/")

    def neg(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

    def int(self, meta, children):
        return ast.Int(int(children[0]), self._span(meta))

    def float(self, meta, children):
        return ast.Float(float(children[0]), self._span(meta))

    def string(self, meta, children):
        return ast.Str(_unquote(children[0]), self._span(meta))

    def true(self, meta, children):
        return ast.Bool(True, self._span(meta))

    def false(self, meta, children):
        return ast.Bool(False, self._span(meta))

    def name(self, meta, children):
        return children[0]

    def list(self, meta, children):
        return ast.List(tuple(_present(children)), self._span(meta))

    def call(self, meta, children):
        func, arglist, scope = children
        args, kwargs = arglist or ((), ())
        return ast.Call(func, args, kwargs, str(scope) if scope else None, self._span(meta))

    def args(self, meta, children):
        present = _present(children)
        positional = tuple(c for c in present if not isinstance(c, ast.Kwarg))
        keyword = tuple(c for c in present if isinstance(c, ast.Kwarg))
        return positional, keyword

    def kwarg(self, meta, children):
        name, value = children
        return ast.Kwarg(str(name), value, self._span(meta))

    def dotted(self, meta, children):
        return ast.Name(tuple(str(c) for c in children), self._span(meta))


def _blank_before(text: str, line: int) -> str:
    """`text` with every line before `line` emptied, so positions after it stay the same."""
    lines = text.split("\n")
    return "\n" * (line - 1) + "\n".join(lines[line - 1:])


def _next_item_line(text: str, after_line: int) -> int | None:
    for number, line in enumerate(text.split("\n")[after_line:], start=after_line + 1):
        if TOP_LEVEL.match(line):
            return number
    return None


def _too_deep(tree: Tree) -> Tree | None:
    """The first node (in source order) more than MAX_DEPTH levels down, found without
    recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((child, depth + (child.data not in WRAPPERS))
                     for child in reversed(node.children) if isinstance(child, Tree))
    return None


def _depth_error(node: Tree, file: str) -> Diagnostic:
    meta = node.meta
    line, col = (1, 1) if getattr(meta, "empty", True) else (meta.line, meta.column)
    end_col = col + 1 if getattr(meta, "empty", True) or meta.end_line != line \
        else meta.end_column
    return Diagnostic("E006", f"nested too deeply: more than {MAX_DEPTH} levels of calls, "
                      "brackets, operators and blocks", ast.Span(file, line, col, line, end_col),
                      help="give parts of the expression names of their own")


def parse(text: str, file: str = "<input>") -> ast.Module:
    """Parse one .par text. Raises ParcError with every syntax error it can find.

    After an error the parser resumes at the next line that starts a top-level item in
    column 1, so independent mistakes in several items are reported in one run.
    """
    diagnostics: list[Diagnostic] = []
    items: list = []
    start_line = 1
    while True:
        source = text if start_line == 1 else _blank_before(text, start_line)
        try:
            tree = grammar().parse(source)
            deep = _too_deep(tree)
            if deep is not None:
                diagnostics.append(_depth_error(deep, file))
                break
            items.extend(_Builder(file).transform(tree).items)
            break
        except UnexpectedInput as exc:
            diagnostics.append(describe_syntax_error(exc, source, file, grammar()))
            line = getattr(exc, "line", None) or 0
            if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
                break
            if isinstance(exc, UnexpectedCharacters | UnexpectedToken) and line < 1:
                break
            resume = _next_item_line(text, max(line, start_line))
            if resume is None or len(diagnostics) >= MAX_SYNTAX_ERRORS:
                break
            start_line = resume
    if diagnostics:
        raise ParcError(diagnostics, {file: text})
    return ast.Module(file, tuple(items))
