"""Checks the `train` block into a TrainSpec."""

from __future__ import annotations

from . import ast
from .settings import (
    POISON,
    CallValue,
    Ident,
    SettingEvaluator,
    ident,
    is_int,
    is_number,
    non_negative_int,
    positive_int,
    positive_number,
    read_settings,
    show,
)
from .spec import DataSpec, LrSchedule, OptimizerSpec, TrainSpec

OPTIMIZERS = {
    "adamw": {"lr": None, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8},
    "sgd": {"lr": None, "momentum": 0.0, "weight_decay": 0.0},
}
TOKEN_DTYPES = ("u16", "i32", "i64")


def _call_args(call: CallValue, params: dict, err, what: str) -> dict | None:
    """Bind a setting call's arguments to `params` (name -> default, None when required)."""
    names = list(params)
    if len(call.args) > len(names):
        err("E113", f"`{call.name}` takes {len(names)} arguments, got {len(call.args)}",
            call.span)
        return None
    bound = dict(zip(names, call.args))
    for key, value, span in call.kwargs:
        if key not in params:
            err("E114", f"`{call.name}` has no parameter `{key}`", span or call.span,
                help=f"its parameters: {', '.join(names)}")
            return None
        bound[key] = value
    for key, default in params.items():
        if key not in bound:
            if default is None:
                err("E113", f"`{call.name}` needs `{key}`", call.span)
                return None
            bound[key] = default
    return bound


def _optimizer(values, span, err, key):
    (value,) = values if len(values) == 1 else (None,)
    if isinstance(value, Ident) and value.name in OPTIMIZERS:
        value = CallValue(value.name, (), (), span)
    if not isinstance(value, CallValue) or value.name not in OPTIMIZERS:
        return err("E148", f"`optimizer` must be {' or '.join(f'`{n}(...)`' for n in OPTIMIZERS)}"
                   f", not {show(value)}", span)
    bound = _call_args(value, OPTIMIZERS[value.name], err, "optimizer")
    if bound is None:
        return POISON
    for name, number in bound.items():
        if not is_number(number) or number < 0:
            return err("E146", f"`{name}` of `{value.name}` must be a non-negative number",
                       value.span)
    if bound["lr"] <= 0:
        return err("E146", "the learning rate must be positive", value.span)
    return OptimizerSpec(value.name, **{k: float(v) for k, v in bound.items()})


def _data(values, span, err, key):
    (value,) = values if len(values) == 1 else (None,)
    if isinstance(value, Ident) and value.name == "synthetic":
        value = CallValue("synthetic", (), (), span)
    if not isinstance(value, CallValue) or value.name not in ("synthetic", "tokens"):
        return err("E148", f"`data` must be `synthetic(seed = N)` or `tokens(\"file.bin\")`, not "
                   f"{show(value)}", span)
    if value.name == "synthetic":
        bound = _call_args(value, {"seed": 0}, err, "data")
        if bound is None:
            return POISON
        if not is_int(bound["seed"]) or bound["seed"] < 0:
            return err("E146", "`seed` must be a non-negative integer", value.span)
        return DataSpec("synthetic", seed=bound["seed"])
    bound = _call_args(value, {"path": None, "dtype": Ident("u16"), "seed": 0}, err, "data")
    if bound is None:
        return POISON
    if not isinstance(bound["path"], str) or not bound["path"]:
        return err("E146", "`tokens` needs a file path string", value.span)
    dtype = bound["dtype"]
    if not isinstance(dtype, Ident) or dtype.name not in TOKEN_DTYPES:
        return err("E146", f"`dtype` of `tokens` must be one of {', '.join(TOKEN_DTYPES)}",
                   value.span)
    return DataSpec("tokens", seed=bound["seed"], path=bound["path"], dtype=dtype.name)


SCHEDULES = {"constant": {}, "cosine": {"warmup": 0, "min_lr": 0.0, "decay_steps": None},
             "linear": {"warmup": 0, "min_lr": 0.0, "decay_steps": None}}


def _lr_schedule(values, span, err, key):
    (value,) = values if len(values) == 1 else (None,)
    if isinstance(value, Ident) and value.name in SCHEDULES:
        value = CallValue(value.name, (), (), span)
    if not isinstance(value, CallValue) or value.name not in SCHEDULES:
        return err("E148", "`lr_schedule` must be `constant`, `cosine(warmup = N, min_lr = x)` "
                   f"or `linear(warmup = N, min_lr = x)`, not {show(value)}", span)
    bound = _call_args(value, {k: (0 if v is None else v) for k, v in
                               SCHEDULES[value.name].items()}, err, "lr_schedule")
    if bound is None:
        return POISON
    warmup, decay = bound.get("warmup", 0), bound.get("decay_steps", 0)
    if not is_int(warmup) or warmup < 0 or not is_int(decay) or decay < 0:
        return err("E146", "`warmup` and `decay_steps` must be non-negative integers", value.span)
    min_lr = bound.get("min_lr", 0.0)
    if not is_number(min_lr) or min_lr < 0:
        return err("E146", "`min_lr` must be a non-negative number", value.span)
    return LrSchedule(value.name, warmup=warmup, min_lr=float(min_lr),
                      decay_steps=decay or None)


def _no_decay(values, span, err, key):
    if len(values) == 1 and isinstance(values[0], Ident) and values[0].name == "none":
        return ()
    if not values or not all(isinstance(v, str) and v for v in values):
        return err("E148", '`no_decay` takes name patterns (`no_decay "*.b", "*norm*"`) or '
                   "`none` (decay every parameter)", span)
    return tuple(values)


SCHEMA = {
    "batch": positive_int,
    "microbatches": positive_int,
    "steps": positive_int,
    "seed": non_negative_int,
    "optimizer": _optimizer,
    "data": _data,
    "precision": ident("f32", "bf16"),
    "grad_clip": positive_number,
    "init": lambda values, span, err, key: _init_file(values, span, err),
    "lr_schedule": _lr_schedule,
    "no_decay": _no_decay,
    "eval_every": positive_int,
    "eval_batches": positive_int,
    "eval_data": _data,
}


def _init_file(values, span, err):
    if len(values) != 1 or not isinstance(values[0], str) or not values[0]:
        return err("E148", '`init` takes a weights file: `init "weights.pt"`', span)
    return values[0]


def check_train(node: ast.Train, err) -> TrainSpec | None:
    settings = [s for s in node.settings if isinstance(s, ast.Setting)]
    checkpoints = [s for s in node.settings if isinstance(s, ast.Checkpoint)]
    values = read_settings(settings, SCHEMA, SettingEvaluator(err), err, "`train`")
    spans = values.pop("__spans__")
    for extra in checkpoints[1:]:
        err("E144", "`checkpoint` is set twice in `train`", extra.span)
    if checkpoints:
        every = SettingEvaluator(err).value(checkpoints[0].every)
        if not is_int(every) or every <= 0:
            err("E146", "`checkpoint every N`: N must be a positive integer", checkpoints[0].span)
            return None
        if not checkpoints[0].directory:
            err("E146", "`checkpoint ... to` needs a directory", checkpoints[0].span)
            return None
        values["checkpoint_every"] = every
        values["checkpoint_dir"] = checkpoints[0].directory
    if any(key not in values for key in spans):
        return None
    if "batch" not in values:
        err("E149", "`train` needs `batch` (the global batch size)", node.span)
        return None
    schedule = values.get("lr_schedule")
    optimizer = values.get("optimizer")
    if schedule is not None and optimizer is not None and schedule.min_lr > optimizer.lr:
        err("E146", f"`min_lr` {schedule.min_lr:g} is above the learning rate {optimizer.lr:g}",
            spans["lr_schedule"])
        return None
    microbatches = values.get("microbatches", 1)
    if values["batch"] % microbatches:
        err("E340", f"batch {values['batch']} does not divide into {microbatches} microbatches",
            spans.get("microbatches", node.span))
        return None
    if checkpoints:
        spans = {**spans, "checkpoint": checkpoints[0].span}
    return TrainSpec(span=node.span, spans=spans, **values)
