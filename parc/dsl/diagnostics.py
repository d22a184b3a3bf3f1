"""The one diagnostic type: `FILE:LINE:COL: error[CODE]: message`, the source line and a caret."""

from __future__ import annotations

from dataclasses import dataclass

from .ast import Span


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None
    help: str | None = None
    note: str | None = None
    severity: str = "error"

    def render(self, sources: dict[str, str]) -> str:
        """The diagnostic as text; `sources` maps a span's file to its text for the caret line."""
        if self.span is None:
            head = f"{self.severity}[{self.code}]: {self.message}"
            return head + (f"\n  = help: {self.help}" if self.help else "")
        span = self.span
        lines = [f"{span}: {self.severity}[{self.code}]: {self.message}"]
        text = sources.get(span.file)
        if text is not None:
            source_lines = text.splitlines()
            if 1 <= span.line <= len(source_lines):
                line = source_lines[span.line - 1].expandtabs(1)
                gutter = f"{span.line:>4} | "
                width = 1
                if span.end_line == span.line and span.end_col > span.col:
                    width = span.end_col - span.col
                width = max(1, min(width, len(line) - span.col + 1))
                lines.append(gutter + line)
                lines.append(" " * (len(gutter) + span.col - 1) + "^" * width)
        if self.note:
            lines.append(f"     = note: {self.note}")
        if self.help:
            lines.append(f"     = help: {self.help}")
        return "\n".join(lines)


class ParcError(Exception):
    """One or more user-facing diagnostics; the CLI renders them and exits 1."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        assert diagnostics, "a ParcError carries at least one diagnostic"
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__(self.diagnostics[0].message)

    def render(self) -> str:
        return "\n".join(d.render(self.sources) for d in self.diagnostics)


def error(code: str, message: str, span: Span | None, help: str | None = None) -> ParcError:
    """A ParcError with one diagnostic (sources are attached by whoever catches it)."""
    return ParcError([Diagnostic(code, message, span, help)])


def closest(name: str, candidates) -> str | None:
    """The candidate nearest to a misspelt name, for 'did you mean' help."""
    import difflib

    found = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return found[0] if found else None
