"""Terminal rendering of the IR: syntax colours on a terminal, plain text when piped."""

from __future__ import annotations

from fnmatch import fnmatchcase

from rich.console import Console
from rich.highlighter import RegexHighlighter
from rich.table import Table
from rich.theme import Theme

from .ir import Graph, print_graph
from .summary import summarize

THEME = Theme({"ir.value": "cyan", "ir.op": "bold yellow", "ir.sbp": "magenta",
               "ir.comment": "dim", "ir.keyword": "bold blue", "ir.comm": "bold red",
               "ir.scope": "green"})


class IrHighlighter(RegexHighlighter):
    base_style = "ir."
    highlights = [
        r"(?P<keyword>^(graph|input|param|output)\b)",
        r"(?P<comm>\b(all_reduce|reduce_scatter|all_gather|all_to_all|slice|zero_fill|"
        r"to_partial|grad_all_reduce)\()",
        r"= (?P<op>[a-z_]+)\(",
        r"(?P<value>%[A-Za-z0-9_.\[\]]+)",
        r"(?P<sbp>\b(S\(-?\d+\)|B|P)@\w+)",
        r"(?P<scope>@[A-Za-z0-9_.\[\]]+)",
        r"(?P<comment>#.*$)",
    ]


def console(file=None) -> Console:
    plain = file is not None and not getattr(file, "isatty", lambda: False)()
    return Console(file=file, theme=THEME, highlighter=IrHighlighter(), soft_wrap=True,
                   width=200 if plain else None)


def scope_filter(pattern: str | None):
    if pattern is None:
        return None
    escaped = pattern.replace("[", "[[]")  # `[` is literal in scopes: block[3].attn
    return lambda scope: fnmatchcase(scope, escaped) or fnmatchcase(scope, escaped + ".*")


def show_graph(graph: Graph, out: Console, scope: str | None = None) -> None:
    for line in print_graph(graph, scope_filter(scope)).splitlines():
        out.print(line, markup=False)


def _human(n: float, unit: str = "") -> str:
    for suffix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


SHORT = {"all_reduce": "AR", "grad_all_reduce": "gradAR", "all_gather": "AG",
         "reduce_scatter": "RS", "all_to_all": "A2A", "slice": "slice", "zero_fill": "zero",
         "to_partial": "toP"}


def _short(key: str) -> str:
    kind, axis = key.split("@")
    return f"{SHORT.get(kind, kind)}@{axis}"


def summary_table(graph: Graph) -> Table:
    table = Table(title=f"{graph.name}: per layer, one microbatch "
                  f"({', '.join(f'{k}={v}' for k, v in graph.bindings)}); "
                  "gradAR = all-reduce of gradients in backward")
    for column in ("scope", "ops", "params", "FLOPs fwd", "FLOPs bwd", "comm fwd", "comm bwd",
                   "collectives"):
        table.add_column(column, justify="left" if column in ("scope", "collectives")
                         else "right")
    rows = summarize(graph)
    for r in rows:
        table.add_row(r.scope, str(r.ops), _human(r.params), _human(r.flops_fwd),
                      _human(r.flops_bwd), _human(r.comm_fwd, "B"), _human(r.comm_bwd, "B"),
                      ", ".join(f"{_short(k)} x{v}" for k, v in sorted(r.collectives.items())))
    table.add_row("total", str(sum(r.ops for r in rows)), _human(sum(r.params for r in rows)),
                  _human(sum(r.flops_fwd for r in rows)), _human(sum(r.flops_bwd for r in rows)),
                  _human(sum(r.comm_fwd for r in rows), "B"),
                  _human(sum(r.comm_bwd for r in rows), "B"), "", style="bold")
    return table
