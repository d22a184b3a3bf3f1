"""Loading a generated program's own modules (stages, kernels) by path, one copy per program."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def sibling(file: str, name: str):
    """The module `name`.py next to `file`, loaded once per version of the file (a program
    compiled again into the same directory is loaded afresh)."""
    path = Path(file).resolve().parent / f"{name}.py"
    key = f"parc_program_{abs(hash((str(path), path.stat().st_mtime_ns)))}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
