"""Loads a .par file and every module it uses (`use std.NAME` or `use "file.par"`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import ast
from .diagnostics import Diagnostic, ParcError, closest
from .parser import parse

STDLIB = Path(__file__).resolve().parent.parent / "stdlib"
BOM = "\ufeff"  # some editors begin UTF-8 files with it; it is not part of the text


@dataclass
class Program:
    """The main module, every module it reaches (by key), and every source text (by file name)."""

    main: ast.Module
    modules: dict[str, ast.Module]
    imports: dict[str, list[tuple[str, ast.Use]]]  # module key -> (used key, the use) in order
    sources: dict[str, str]


def stdlib_modules() -> list[str]:
    return sorted(p.stem for p in STDLIB.glob("*.par"))


def display_name(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_source(path: Path, file: str, span: ast.Span | None = None) -> str:
    """A .par file's text: UTF-8, a leading byte-order mark dropped. Bytes that are not UTF-8
    are reported at their line and column. Raises ParcError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ParcError([Diagnostic("E100", f"cannot read `{file}`: {reason}", span)]) from None
    try:
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", errors="replace").removeprefix(BOM)
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[line_start:exc.start].decode("utf-8", errors="replace")
                  .removeprefix(BOM)) + 1
        where = ast.Span(file, line, col, line, col + 1)
        raise ParcError([Diagnostic("E100", f"`{file}` is not UTF-8 text: byte "
                                    f"0x{data[exc.start]:02x} cannot start or continue a "
                                    "character", where, help="save the file as UTF-8")],
                        {file: text}) from None


def load_text(text: str, file: str, base_dir: Path | None = None) -> Program:
    """Parse `text` as the main module and load its uses. Raises ParcError."""
    text = text.removeprefix(BOM)
    program = Program(ast.Module(file, ()), {}, {}, {file: text})
    diagnostics: list[Diagnostic] = []
    try:
        program.main = parse(text, file)
    except ParcError as exc:
        raise ParcError(exc.diagnostics, program.sources) from None
    program.modules[file] = program.main
    _load_uses(program, file, program.main, base_dir or Path.cwd(), [file], diagnostics)
    if diagnostics:
        raise ParcError(diagnostics, program.sources)
    return program


def load(path: str | Path) -> Program:
    """Read and parse a .par file and everything it uses. Raises ParcError."""
    path = Path(path)
    file = display_name(path)
    return load_text(read_source(path, file), file, path.parent)


def _load_uses(program: Program, key: str, module: ast.Module, base_dir: Path,
               stack: list[str], diagnostics: list[Diagnostic]) -> None:
    program.imports.setdefault(key, [])
    for item in module.items:
        if not isinstance(item, ast.Use):
            continue
        if item.module is not None:
            if len(item.module) != 2 or item.module[0] != "std":
                diagnostics.append(Diagnostic(
                    "E101", f"unknown module `{'.'.join(item.module)}`", item.span,
                    help="library modules are `std.NAME`; use \"file.par\" for your own files"))
                continue
            path = STDLIB / f"{item.module[1]}.par"
            if not path.is_file():
                guess = closest(item.module[1], stdlib_modules())
                diagnostics.append(Diagnostic(
                    "E101", f"unknown module `std.{item.module[1]}`", item.span,
                    help=f"did you mean `std.{guess}`?" if guess else
                    "library modules: " + ", ".join(f"std.{m}" for m in stdlib_modules())))
                continue
            used_key, file = f"std.{item.module[1]}", f"std/{item.module[1]}.par"
        else:
            path = (base_dir / item.path).resolve()
            used_key = file = display_name(path)
        program.imports[key].append((used_key, item))
        if used_key in stack:
            cycle = " -> ".join(stack[stack.index(used_key):] + [used_key])
            diagnostics.append(Diagnostic("E102", f"modules use each other in a cycle: {cycle}",
                                          item.span))
            continue
        if used_key in program.modules:
            continue
        try:
            text = read_source(path, file, item.span)
        except ParcError as exc:
            diagnostics.extend(exc.diagnostics)
            program.sources.update(exc.sources)
            continue
        program.sources[file] = text
        try:
            used = parse(text, file)
        except ParcError as exc:
            diagnostics.extend(exc.diagnostics)
            continue
        program.modules[used_key] = used
        _load_uses(program, used_key, used, path.parent, stack + [used_key], diagnostics)
