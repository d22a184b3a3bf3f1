"""Everything about a run that can be checked before it launches.

A mistake found inside the ranks costs a launch and ends in four tracebacks; found here it is
one diagnostic at the spec's line: the values given on the command line, the output
directories, the plan's memory, the weights file of `init`, and the checkpoint `--resume`
continues from (complete, readable, written by the same model, not already past the steps
asked for). Differences that do not stop a resume, such as another learning rate, are
returned as notes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .compiler.plan import Plan
from .dsl.ast import Span
from .dsl.diagnostics import Diagnostic, ParcError
from .dsl.spec import Spec
from .runtime.checkpoint_meta import CheckpointError, CheckpointInfo, find, inspect


@dataclass(frozen=True, kw_only=True)
class Preflight:
    steps: int  # the steps the run trains up to
    resume: CheckpointInfo | None = None  # the checkpoint a resume continues from
    notes: list[Diagnostic] = field(default_factory=list)


def check_steps(steps: int | None) -> None:
    """`--steps N` asks for at least one step (None: the spec's)."""
    if steps is not None and steps < 1:
        raise ParcError([Diagnostic("E399", f"`--steps {steps}`: a run trains at least one "
                                    "step", None, help="leave --steps out for the spec's "
                                    "`steps`")])


def preflight(spec: Spec, plan: Plan, steps: int, out: Path, trace: Path | None = None,
              resume: bool = False, force: bool = False,
              tensorboard: Path | None = None) -> Preflight:
    """Check a run before launch; raises ParcError with every problem found."""
    errors: list[Diagnostic] = []
    sources = dict(spec.sources)
    train = spec.train
    for flag, path in (("--out", out), ("--trace", trace), ("--tensorboard", tensorboard)):
        problem = _unwritable(path) if path is not None else None
        if problem:
            errors.append(Diagnostic("E397", f"`{flag} {path}`: {problem}", None))
    if train.checkpoint_dir is not None:
        problem = _unwritable(Path(train.checkpoint_dir))
        if problem:
            errors.append(Diagnostic("E397", f"checkpoints cannot be saved to "
                                     f"{train.checkpoint_dir}: {problem}", _span(train,
                                                                                 "checkpoint")))
    if not plan.fits and not force:
        errors.append(_over_memory(spec, plan))
    params = {p.name: tuple(d.as_int() for d in p.type.shape) for p in spec.model.params}
    if train.init is not None:
        from .runtime.weights import WeightsError, check_weights

        try:
            check_weights(train.init, params)
        except WeightsError as exc:
            errors.append(Diagnostic("E385", f"the weights file {train.init} cannot initialise "
                                     f"`{spec.model.name}`: {exc}", _span(train, "init")))
    info, notes = None, []
    if resume:
        try:
            info = inspect(find(train.checkpoint_dir))
        except CheckpointError as exc:
            errors.append(_damaged(exc, train, sources))
        if info is not None:
            errors += _other_model(info, params, spec)
            if info.step >= steps and not errors:
                errors.append(Diagnostic("E395", f"the newest checkpoint, {info.path}, has "
                                         f"{info.step} steps done and the run asks for {steps}: "
                                         "nothing is left to train", _span(train, "checkpoint"),
                                         help=f"ask for more (`--steps {info.step + 1}` or "
                                         "more), or start afresh without --resume"))
            notes = _other_settings(info, spec)
    if errors:
        raise ParcError(errors, sources)
    return Preflight(steps=steps, resume=info, notes=notes)


def _span(train, key: str) -> Span | None:
    return train.spans.get(key, train.span)


def _unwritable(path: Path) -> str | None:
    """Why files cannot be written into directory `path` (None: they can)."""
    try:
        if path.exists() and not path.is_dir():
            return "it is a file, not a directory"
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a directory"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _over_memory(spec: Spec, plan: Plan) -> Diagnostic:
    limit = spec.parallel.hardware.memory
    rank, worst = max(enumerate(plan.memory), key=lambda rm: rm[1].total)
    return Diagnostic("E361", f"the plan needs {_bytes(worst.total)} on pipeline rank "
                      f"{rank}, over the {_bytes(limit)} of `{spec.parallel.hardware.name}`",
                      spec.parallel.span,
                      help="`parc plan` shows the memory of each rank and `parc tune` finds a "
                      "plan that fits; `parc run --force` launches it anyway")


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def _damaged(exc: CheckpointError, train, sources: dict[str, str]) -> Diagnostic:
    if exc.line is not None:
        try:
            sources[str(exc.file)] = exc.file.read_text(errors="replace")
            col = exc.col or 1
            span = Span(str(exc.file), exc.line, col, exc.line, col + 1)
            return Diagnostic("E393", f"--resume: {exc}", span)
        except OSError:
            pass
    code = "E392" if "no checkpoint" in str(exc) or "no `latest`" in str(exc) else "E393"
    return Diagnostic(code, f"--resume: {exc}", _span(train, "checkpoint"),
                      help="resume needs a checkpoint this spec saved; start afresh without "
                      "--resume" if code == "E392" else None)


def _other_model(info: CheckpointInfo, params: dict, spec: Spec) -> list[Diagnostic]:
    """A checkpoint of another model (other parameter names or shapes) cannot be resumed."""
    span = _span(spec.train, "checkpoint")
    missing = [n for n in params if n not in info.params]
    extra = [n for n in info.params if n not in params]
    wrong = [n for n in params if n in info.params and tuple(info.params[n]) != params[n]]
    if not (missing or extra or wrong):
        return []
    if wrong:
        name = wrong[0]
        what = (f"`{name}` is {list(info.params[name])} there and {list(params[name])} in "
                f"the spec" + (f" ({len(wrong) - 1} more differ)" if len(wrong) > 1 else ""))
    elif missing:
        what = f"it has no `{missing[0]}`" + (f" (nor {len(missing) - 1} more)"
                                              if len(missing) > 1 else "")
    else:
        what = f"it has `{extra[0]}`, which the spec does not" + (
            f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
    written = info.about.get("model")
    by = f" (written by model `{written}`)" if written else ""
    return [Diagnostic("E394", f"--resume: the checkpoint {info.path}{by} is of another "
                       f"model than `{spec.model.name}`: {what}", span,
                       help="resume with the spec that saved it, or save this model's "
                       "checkpoints to another directory")]


def settings_of(spec: Spec) -> dict:
    """The model and training settings a checkpoint records, as the runtime writes them
    from the program (runtime/checkpoint_meta.py `about`)."""
    train = spec.train
    return json.loads(json.dumps({
        "hyper": spec.model.numbers,
        "train": {"batch": train.batch, "microbatches": train.microbatches, "seed": train.seed,
                  "precision": train.precision, "grad_clip": train.grad_clip,
                  "optimizer": asdict(train.optimizer), "data": asdict(train.data)}}))


def _other_settings(info: CheckpointInfo, spec: Spec) -> list[Diagnostic]:
    """Settings that differ from the checkpoint's: the run continues with the spec's."""
    now = settings_of(spec)
    changes = []
    for group in ("hyper", "train"):
        before = info.about.get(group)
        if not isinstance(before, dict):
            continue
        for key, value in _flat(now[group]).items():
            old = _flat(before).get(key, "(unset)")
            if old != value:
                changes.append(f"{key} = {_show(old)} (now {_show(value)})")
    if not changes:
        return []
    return [Diagnostic("E396", f"resuming {info.path}, saved with other settings: "
                       + ", ".join(changes), _span(spec.train, "checkpoint"),
                       help="the run continues with this spec's settings", severity="note")]


def _flat(settings: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
