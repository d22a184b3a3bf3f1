"""Name resolution across modules: which def or hardware a (possibly dotted) name means."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

from . import ast
from .diagnostics import Diagnostic, closest
from .loader import Program


@dataclass(frozen=True)
class Entity:
    kind: str  # "def" or "hardware"
    node: ast.Def | ast.HardwareDef | ast.HardwareInst
    module: str  # key of the module that defines it


@dataclass
class Namespace:
    own: dict[str, Entity] = field(default_factory=dict)
    imported: dict[str, list[Entity]] = field(default_factory=dict)  # unqualified, maybe several
    qualified: dict[str, Entity] = field(default_factory=dict)  # std.gpt.block

    def candidates(self) -> list[str]:
        return list(self.own) + list(self.imported) + list(self.qualified)


def _prefix(key: str) -> str:
    return key if key.startswith("std.") else PurePath(key).stem


def build_namespaces(program: Program, diagnostics: list[Diagnostic]) -> dict[str, Namespace]:
    spaces: dict[str, Namespace] = {}
    for key, module in program.modules.items():
        space = Namespace()
        for item in module.items:
            if isinstance(item, ast.Def | ast.HardwareDef | ast.HardwareInst):
                kind = "def" if isinstance(item, ast.Def) else "hardware"
                if item.name in space.own:
                    first = space.own[item.name].node.span
                    diagnostics.append(Diagnostic(
                        "E103", f"`{item.name}` is defined twice", item.span,
                        help=f"first defined at {first.line}:{first.col}" if first else None))
                    continue
                space.own[item.name] = Entity(kind, item, key)
        spaces[key] = space
    for key, uses in program.imports.items():
        space = spaces[key]
        for used_key, _use in uses:
            if used_key not in spaces:
                continue
            for name, entity in spaces[used_key].own.items():
                space.qualified[f"{_prefix(used_key)}.{name}"] = entity
                bucket = space.imported.setdefault(name, [])
                if entity not in bucket:
                    bucket.append(entity)
    return spaces


def resolve(space: Namespace, name: ast.Name) -> tuple[Entity | None, str | None]:
    """The entity a name means, or None and a sentence saying why not."""
    dotted = name.dotted
    if len(name.parts) == 1 and dotted in space.own:
        return space.own[dotted], None
    if len(name.parts) == 1 and dotted in space.imported:
        found = space.imported[dotted]
        if len(found) > 1:
            where = " and ".join(f"`{_prefix(e.module)}`" for e in found)
            return None, f"`{dotted}` is ambiguous: it is defined in {where}; qualify it"
        return found[0], None
    if dotted in space.qualified:
        return space.qualified[dotted], None
    return None, None


def suggestion(space: Namespace, name: str, extra: list[str] = ()) -> str | None:
    guess = closest(name, space.candidates() + list(extra))
    return f"did you mean `{guess}`?" if guess else None
