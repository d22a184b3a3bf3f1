"""The checker: names, types, symbolic shapes, hardware, training and parallel settings.

`check_file(path)` returns a Spec or raises ParcError carrying every diagnostic found.
"""

from __future__ import annotations

from pathlib import Path

from . import ast
from .diagnostics import Diagnostic, ParcError
from .elaborate import Elaborator
from .hardware import hardware_of
from .loader import Program, load, load_text
from .names import Namespace, build_namespaces
from .parallel import ParallelChecker, glob_regex
from .settings import POISON
from .spec import HardwareSpec, Spec
from .train import check_train
from .values import Value


class _Reporter:
    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        self.seen: set[tuple] = set()

    def __call__(self, code: str, message: str, span, help: str | None = None,
                 note: str | None = None):
        key = (code, message, span)
        if key not in self.seen:
            self.seen.add(key)
            self.diagnostics.append(Diagnostic(code, message, span, help, note))
        return POISON


def _single(items: list, word: str, err) -> object | None:
    for extra in items[1:]:
        err("E104", f"a file holds at most one `{word}`", extra.span)
    return items[0] if items else None


def check_program(program: Program, overrides: dict[str, Value] | None = None) -> Spec:
    diagnostics: list[Diagnostic] = []
    err = _Reporter(diagnostics)
    spaces = build_namespaces(program, diagnostics)
    main_key = program.main.file
    items = program.main.items
    model_node = _single([i for i in items if isinstance(i, ast.Model)], "model", err)
    train_node = _single([i for i in items if isinstance(i, ast.Train)], "train", err)
    parallel_node = _single([i for i in items if isinstance(i, ast.Parallel)], "parallel", err)

    for module in program.modules.values():
        for item in module.items:
            if isinstance(item, ast.Def):
                _check_def_header(item, err)

    hardware: dict[str, HardwareSpec] = {}
    space: Namespace = spaces[main_key]
    for name, entity in space.own.items():
        if entity.kind == "hardware" and not (isinstance(entity.node, ast.HardwareDef)
                                              and entity.node.params):
            spec = hardware_of(entity, spaces, err)
            if spec is not None:
                hardware[name] = spec

    _check_overrides(overrides or {}, model_node, main_key, err)
    model = None
    if model_node is not None:
        model = Elaborator(spaces, err).model(model_node, main_key, overrides or {})
    train = check_train(train_node, err) if train_node is not None else None
    if train is not None and model is not None:
        _check_loss(model, train_node, err)
        if not any(d.code == "E133" for d in err.diagnostics):
            _check_targets(model, err)
        _check_no_decay(model, train, train_node, err)
        train = _check_train_files(train, train_node, model, program, err)
    if train_node is not None and model_node is None:
        err("E306", "`train` needs a `model` in the same file", train_node.span)

    parallel = None
    if parallel_node is not None:
        parallel = _check_parallel(parallel_node, model, train, hardware, spaces, main_key,
                                   program, err)
    if diagnostics:
        raise ParcError(diagnostics, program.sources)
    return Spec(main_key, model, train, parallel, hardware, program.sources)


def _check_overrides(overrides: dict, model_node, file: str, err) -> None:
    """Every `--set NAME=VALUE` names a parameter of the model's header."""
    from .diagnostics import closest

    known = [p.name for p in model_node.params] if model_node is not None else []
    for name in overrides:
        if name in known:
            continue
        if model_node is None:
            err("E107", f"`--set {name}=...`: {file} has no `model` to set parameters of", None)
            continue
        guess = closest(name, known)
        listing = ", ".join(known) if known else "none"
        err("E107", f"`--set {name}=...`: model `{model_node.name}` has no parameter `{name}`",
            model_node.span, help=(f"did you mean `{guess}`? " if guess else "") +
            f"its parameters: {listing}")


def _check_def_header(node: ast.Def, err) -> None:
    from ..ops.catalog import CATALOG

    if node.name in CATALOG:
        err("E105", f"def `{node.name}` has the name of a primitive op", node.span,
            help="choose another name")
    seen = set()
    for param in node.params:
        if param.name in seen:
            err("E106", f"parameter `{param.name}` is listed twice", param.span)
        seen.add(param.name)


def _check_loss(model, train_node, err) -> None:
    loss = model.outputs.get("loss")
    if loss is None:
        if not any(d.code.startswith("E1") or d.code.startswith("E2") for d in err.diagnostics):
            err("E172", "a model that trains must `output loss`", model.span)
        return
    type_ = model.values[loss]
    if type_.shape != () or not type_.is_float:
        err("E172", f"the training loss must be a float scalar, got {type_}",
            model.output_spans.get("loss", model.span))


def _check_targets(model, err) -> None:
    """Every integer input is read from one token stream: an input that is not declared
    `= next(...)` holds the tokens themselves. Labels of a loss that equal another input of the
    model would teach it to copy its input."""
    plain = [i for i in model.inputs if i.type.is_int and i.next_of is None]
    labels = {op.inputs[1] for op in model.ops if op.kind == "cross_entropy"}
    for target in plain:
        if target.value not in labels:
            continue
        twin = next((i for i in plain if i is not target and i.type.shape == target.type.shape),
                    None)
        if twin is not None:
            err("E173", f"`{target.name}` would hold the same tokens as `{twin.name}`: the loss "
                f"would teach the model to copy its input", target.span,
                help=f"declare the next-token targets: `input {target.name}: {target.type} = "
                f"next({twin.name})`")


def _check_no_decay(model, train, node, err) -> None:
    for pattern in train.no_decay or ():
        if not any(glob_regex(pattern).match(p.name) for p in model.params):
            err("E153", f"`no_decay`: `{pattern}` matches no parameter",
                _setting_span(node, "no_decay"))


def _spec_dir(program) -> Path:
    """Where paths written in the spec are relative to."""
    return Path() if program.main.file.startswith("<") else Path(program.main.file).parent


def _is_file(path: Path) -> bool:
    """Whether a path written in the spec names a file (a name too long is not one)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _setting_span(node: ast.Train, key: str):
    return next((s.span for s in node.settings if getattr(s, "key", None) == key), node.span)


def _check_train_files(train, node, model, program, err):
    """Resolve the files `train` names (data, weights, checkpoints) next to the spec."""
    from dataclasses import replace

    if train.data.kind == "tokens":
        train = _check_token_file(train, node, model, program, err)
    if train.init is not None:
        path = (_spec_dir(program) / train.init).resolve()
        if not _is_file(path):
            err("E383", f"the weights file `{train.init}` does not exist",
                _setting_span(node, "init"))
        else:
            train = replace(train, init=str(path))
    if train.checkpoint_dir is not None:
        directory = (_spec_dir(program) / train.checkpoint_dir).resolve()
        train = replace(train, checkpoint_dir=str(directory))
    if train.eval_data is not None and train.eval_data.kind == "tokens":
        path = (_spec_dir(program) / train.eval_data.path).resolve()
        if not path.is_file():
            err("E380", f"the eval data file `{train.eval_data.path}` does not exist",
                _setting_span(node, "eval_data"))
        else:
            train = replace(train, eval_data=replace(train.eval_data, path=str(path)))
    return train


def _check_token_file(train, node, model, program, err):
    """The token file exists, is long enough for one sequence and fits the vocabulary."""
    import numpy as np

    from .train import TOKEN_DTYPES

    span = _setting_span(node, "data")
    base = _spec_dir(program)
    path = (base / train.data.path).resolve()
    if not _is_file(path):
        err("E380", f"the data file `{train.data.path}` does not exist (looked in {base or '.'})",
            span, help="make one with examples/prepare_text.py")
        return train
    dtype = {"u16": np.uint16, "i32": np.int32, "i64": np.int64}[train.data.dtype]
    assert train.data.dtype in TOKEN_DTYPES
    size = path.stat().st_size
    width = np.dtype(dtype).itemsize
    if size % width:
        err("E384", f"`{train.data.path}` holds {size} bytes, not a whole number of "
            f"{train.data.dtype} tokens ({width} bytes each)", span,
            help="the file is cut short or written in another dtype: say `dtype = ...`")
        return train
    try:
        tokens = np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0)
    except OSError as exc:
        err("E380", f"cannot read the data file `{train.data.path}`: {exc.strerror or exc}",
            span)
        return train
    inputs = [i for i in model.inputs if i.type.is_int]
    seq = inputs[0].type.shape[1].as_int() if inputs and inputs[0].type.rank > 1 else 1
    if len(tokens) < (seq or 1) + 2:
        err("E381", f"`{train.data.path}` holds {len(tokens)} tokens, fewer than one sequence of "
            f"{seq} and its next token", span)
        return train
    rows = [model.values[op.inputs[1]].shape[0].as_int() for op in model.ops
            if op.kind == "embedding" and op.inputs[0] in {i.value for i in inputs}]
    if rows and int(tokens.max()) >= rows[0]:
        err("E382", f"`{train.data.path}` holds token {int(tokens.max())}, but the embedding "
            f"has {rows[0]} rows", span, help="raise the model's vocabulary size")
        return train
    from dataclasses import replace

    return replace(train, data=replace(train.data, path=str(path)))


def _check_parallel(node, model, train, hardware, spaces, main_key, program, err):
    if model is None or train is None:
        if train is None and any(isinstance(i, ast.Train) for i in program.main.items):
            return None  # the train block's own errors are reported
        err("E305", "`parallel` needs a `model` and a `train` block in the same file", node.span)
        return None
    hw = hardware.get(node.hardware)
    if hw is None:
        entity = spaces[main_key].own.get(node.hardware)
        if entity is None:
            found = spaces[main_key].imported.get(node.hardware, [])
            entity = found[0] if len(found) == 1 else None
        if entity is None or entity.kind != "hardware":
            from .names import suggestion

            err("E110", f"no hardware is called `{node.hardware}`", node.span,
                help=suggestion(spaces[main_key], node.hardware))
            return None
        hw = hardware_of(entity, spaces, err)
        if hw is None:
            return None
    if any(d.code.startswith("E2") or d.code.startswith("E1") for d in err.diagnostics):
        return None  # SBP and stages need a well-formed model
    def_names = {n for m in program.modules.values() for n in
                 (i.name for i in m.items if isinstance(i, ast.Def))}
    return ParallelChecker(node, model, train, hw, err, def_names).check()


def check_text(text: str, file: str = "<input>", overrides=None) -> Spec:
    return check_program(load_text(text, file, Path.cwd()), overrides)


def check_file(path: str | Path, overrides=None) -> Spec:
    return check_program(load(path), overrides)
