"""Calls during elaboration: primitive ops through the catalog, and defs inlined in a new scope."""

from __future__ import annotations

from ..ops.catalog import ATTR_KINDS, CATALOG, REQUIRED, ShapeError
from ..ops.dims import Dim
from ..ops.types import TensorT
from . import ast
from .names import resolve, suggestion
from .spec import OpInfo, TopScope
from .values import MAX_OPS, POISON, Abort, Frame, Tensor, Value, describe

MAX_CALL_DEPTH = 64


class CallMixin:
    """Call handling for the Elaborator (split out to keep each file to one job)."""

    def call(self, frame, e: ast.Call) -> Value:
        name = e.func.dotted
        if len(e.func.parts) == 1 and name in CATALOG:
            if e.scope is not None:
                return self.err("E122", f"`as {e.scope}` names the parameter scope of a def "
                                f"call; `{name}` is a primitive op", e.span)
            return self.primitive_call(frame, e)
        entity, why = resolve(self.spaces[frame.module], e.func)
        if entity is None:
            help = suggestion(self.spaces[frame.module], name, list(CATALOG))
            return self.err("E110", why or f"`{name}` is not defined", e.func.span, help=help)
        if entity.kind != "def":
            return self.err("E112", f"`{name}` is a hardware preset, not a def", e.func.span)
        return self.def_call(frame, e, entity)

    # ---- primitives
    def primitive_call(self, frame, e: ast.Call) -> Value:
        spec = CATALOG[e.func.dotted]
        args = [self.expr(frame, a) for a in e.args]
        kwargs = {k.name: (self.expr(frame, k.value), k) for k in e.kwargs}
        operand_count = len(spec.operands)
        if len(args) < operand_count:
            missing = spec.operands[len(args)]
            signature = ", ".join(spec.operands + tuple(spec.attr_names()))
            return self.err("E113", f"`{spec.name}` is missing operand `{missing}`", e.span,
                            help=f"{spec.name}({signature})")
        operands, rest = args[:operand_count], args[operand_count:]
        attr_names = spec.attr_names()
        if len(rest) > len(attr_names):
            return self.err("E113", f"`{spec.name}` takes at most "
                            f"{operand_count + len(attr_names)} arguments, got {len(args)}", e.span)
        raw = dict(zip(attr_names, rest))
        for key, (value, node) in kwargs.items():
            if key not in attr_names:
                return self.err("E114", f"`{spec.name}` has no attribute `{key}`", node.span,
                                help=f"its attributes: {', '.join(attr_names) or 'none'}")
            if key in raw:
                return self.err("E114", f"`{key}` is given twice", node.span)
            raw[key] = value
        attrs = {}
        for key, default in spec.attrs:
            if key not in raw:
                if default is REQUIRED:
                    return self.err("E113", f"`{spec.name}` needs `{key}`", e.span)
                attrs[key] = default
                continue
            converted = self.attr_value(key, raw[key], e.span)
            if converted is POISON:
                return POISON
            attrs[key] = converted
        return self.primitive_apply(spec.name, operands, attrs, frame, e.span,
                                    operand_spans=[a.span for a in e.args])

    def attr_value(self, key: str, value: Value, span) -> object:
        kind = ATTR_KINDS.get(key, float)
        if value is POISON:
            return POISON
        if kind is int and isinstance(value, Dim) and value.is_int:
            return value.as_int()
        if kind is float and isinstance(value, Dim) and value.is_const:
            return float(value.const)
        if kind is float and isinstance(value, float) and not isinstance(value, bool):
            return value
        if kind is list and isinstance(value, list) and all(isinstance(v, Dim) for v in value):
            return value
        if kind is bool and isinstance(value, bool):
            return value
        wanted = {int: "an integer", float: "a number", list: "a list of dimensions",
                  bool: "`true` or `false`"}[kind]
        return self.err("E202", f"`{key}` must be {wanted}, not {describe(value)}", span)

    def primitive_apply(self, kind: str, operands: list[Value], attrs: dict, frame, span,
                        operand_spans=None) -> Value:
        if any(v is POISON for v in operands):
            return POISON
        for i, value in enumerate(operands):
            if not isinstance(value, Tensor):
                where = (operand_spans or [None] * len(operands))[i] or span
                return self.err("E203", f"`{kind}` operand `{CATALOG[kind].operands[i]}` must be "
                                f"a tensor, not {describe(value)}", where)
        try:
            out_types = CATALOG[kind].infer([v.type for v in operands], attrs)
        except ShapeError as exc:
            where = span
            if exc.operand is not None and operand_spans and exc.operand < len(operand_spans):
                where = operand_spans[exc.operand] or span
            return self.err("E204", f"`{kind}`: {exc}", where)
        if kind == "dropout" and attrs.get("p") == 0.0:
            return operands[0]  # no dropout: no op
        if len(self.ops) >= MAX_OPS:
            self.err("E161", f"the model elaborates to more than {MAX_OPS} ops", span)
            raise Abort
        outputs = [self.new_tensor(t) for t in out_types]
        stored = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items())
        self.ops.append(OpInfo(kind, tuple(v.id for v in operands), tuple(o.id for o in outputs),
                               stored, frame.scope, span))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    # ---- defs
    def def_call(self, caller, e: ast.Call, entity) -> Value:
        node: ast.Def = entity.node
        if caller.depth >= MAX_CALL_DEPTH:
            return self.err("E121", f"calls nest deeper than {MAX_CALL_DEPTH}; does `{node.name}` "
                            "call itself?", e.span)
        args = [self.expr(caller, a) for a in e.args]
        kwargs = {k.name: (self.expr(caller, k.value), k) for k in e.kwargs}
        if len(args) > len(node.params):
            return self.err("E113", f"`{node.name}` takes {len(node.params)} argument"
                            f"{'s' * (len(node.params) != 1)}, got {len(args)}", e.span)
        base = e.scope or node.name
        label = base + "".join(f"[{i}]" for i in caller.loop_index)
        scope = f"{caller.scope}.{label}" if caller.scope else label
        if label in caller.used_scopes:
            first = caller.used_scopes[label]
            where = f" by the call at {first.line}:{first.col}" if first else ""
            return self.err("E120", f"the parameter scope `{base}` is already used{where}",
                            e.span, help=f"name this call: `{node.name}(...) as NEW_NAME`")
        caller.used_scopes[label] = e.span
        if caller.is_model:
            index = caller.loop_index[-1] if caller.loop_index else None
            self.scopes.append(TopScope(label, base, index, e.span))

        frame = Frame(entity.module, scope, {}, is_model=False, depth=caller.depth + 1)
        names = [p.name for p in node.params]
        bound: dict[str, Value] = dict(zip(names, args))
        for key, (value, kw) in kwargs.items():
            if key not in names:
                return self.err("E114", f"`{node.name}` has no parameter `{key}`", kw.span,
                                help=f"its parameters: {', '.join(names)}")
            if key in bound:
                return self.err("E114", f"argument `{key}` is given twice", kw.span)
            bound[key] = value
        return self.inline(frame, node, bound, e)

    def inline(self, frame, node: ast.Def, bound: dict, e: ast.Call) -> Value:
        for param in node.params:
            if param.name in bound:
                frame.env[param.name] = bound[param.name]
            elif param.default is not None:
                frame.env[param.name] = self.expr(frame, param.default)
            else:
                return self.err("E113", f"`{node.name}` is missing argument `{param.name}`",
                                e.span)
        for param in node.params:
            if param.pattern is not None and not self.match_pattern(frame, node, param, e):
                return POISON
        self.calls.append((node.name, e.span))
        try:
            self.stmts(frame, node.body)
        finally:
            self.calls.pop()
        if frame.returned is None:
            return self.err("E152", f"`{node.name}` returns nothing", e.span,
                            help="end the def with `return VALUE`")
        return frame.returned[0] if len(frame.returned) == 1 else frame.returned

    def match_pattern(self, frame, node: ast.Def, param: ast.DefParam, call: ast.Call) -> bool:
        """Check an argument against `x: [*, d]` and bind the pattern's names in the def."""
        value = frame.env[param.name]
        pattern = param.pattern
        if value is POISON:
            return False
        if not isinstance(value, Tensor):
            self.err("E205", f"`{node.name}` expects `{param.name}` to be a tensor, got "
                     f"{describe(value)}", call.span)
            return False
        type_: TensorT = value.type
        if pattern.dtype is not None and pattern.dtype != type_.dtype:
            self.err("E205", f"`{node.name}` expects `{param.name}` of dtype {pattern.dtype}, "
                     f"got {type_}", call.span)
            return False
        dims = list(pattern.dims)
        if dims.count("*") > 1:
            self.err("E206", "a shape pattern may hold one `*`", pattern.span)
            return False
        shape = list(type_.shape)
        if "*" in dims:
            star = dims.index("*")
            fixed = len(dims) - 1
            if len(shape) < fixed:
                return self.pattern_mismatch(node, param, type_, call)
            shape = shape[:star] + [None] + shape[len(shape) - (fixed - star):]
        if len(shape) != len(dims):
            return self.pattern_mismatch(node, param, type_, call)
        for want, got in zip(dims, shape):
            if want == "*":
                continue
            if isinstance(want, int):
                if got != Dim.of(want):
                    return self.pattern_mismatch(node, param, type_, call)
            elif want in frame.env:
                if frame.env[want] != got:
                    return self.pattern_mismatch(node, param, type_, call, want, frame.env[want])
            else:
                frame.env[want] = got
        return True

    def pattern_mismatch(self, node, param, type_, call, name=None, bound=None) -> bool:
        pattern = param.pattern
        text = "[" + ", ".join(str(d) for d in pattern.dims) + "]"
        extra = f" (`{name}` is {describe(bound)})" if name is not None else ""
        self.err("E205", f"`{node.name}` expects `{param.name}` shaped {text}, got {type_}{extra}",
                 call.span)
        return False
