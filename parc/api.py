"""The functions the CLI and other tools use."""

from __future__ import annotations

from pathlib import Path

from . import __version__
from .dsl.check import check_file
from .dsl.diagnostics import Diagnostic, ParcError
from .dsl.spec import Spec

__all__ = ["__version__", "check", "parse_overrides", "summary"]


def check(path: str | Path, overrides: dict | None = None) -> Spec:
    """Parse and check a .par file. Raises ParcError with every diagnostic."""
    return check_file(path, overrides)


def parse_overrides(items: list[str]) -> dict:
    """`--set d=256` values as checker values (integers as dimensions, else floats or booleans)."""
    from .ops.dims import Dim

    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ParcError([Diagnostic("E107", f"`--set {item}`: expected NAME=VALUE", None)])
        text = text.strip()
        if text in ("true", "false"):
            out[name] = text == "true"
            continue
        try:
            out[name] = Dim.of(int(text))
        except ValueError:
            try:
                out[name] = float(text)
            except ValueError:
                raise ParcError([Diagnostic("E107", f"`--set {item}`: the value must be a number "
                                            "or a boolean", None)]) from None
    return out


def summary(spec: Spec) -> str:
    """One line saying what a checked spec holds."""
    parts = []
    if spec.model is not None:
        count = sum(_numel(p.type) for p in spec.model.params)
        parts.append(f"model {spec.model.name}: {len(spec.model.ops)} ops, "
                     f"{_human(count)} parameters")
    if spec.parallel is not None:
        mesh = " x ".join(f"{a}={n}" for a, n in spec.parallel.mesh)
        parts.append(f"mesh {mesh} on {spec.parallel.hardware.name}, "
                     f"schedule {spec.parallel.schedule.name}")
    return (" - " + "; ".join(parts)) if parts else ""


def _numel(type_) -> int:
    n = 1
    for d in type_.shape:
        n *= d.as_int() or 1
    return n


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
