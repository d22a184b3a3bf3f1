"""A path that skips stages sends a stage's output straight to a later (or, reordered, an
earlier) stage: at every hop the receiving stage must take exactly what the sending stage
sends (the same tensors, shapes and SBP), or it would read another layout for its input."""

from __future__ import annotations

from collections.abc import Sequence

from ..dsl.ast import Span
from ..dsl.diagnostics import Diagnostic, ParcError
from ..dsl.spec import Spec
from .boundaries import stage_boundaries
from .ir import Graph, format_ndsbp
from .schedules import Schedule


def check_paths(spec: Spec, graph: Graph, num_stages: int,
                paths: Sequence[Sequence[int]], span: Span | None, where: str) -> None:
    """Raise E336 at `span` when a hop of a path joins stages whose tensors differ; `where`
    names what chose the paths (the schedule, a command-line flag)."""
    hops = sorted({(a, b) for path in paths for a, b in zip(path, path[1:]) if b != a + 1})
    if not hops:
        return
    edges = stage_boundaries(graph, num_stages)

    def layout(name: str) -> str:
        v = graph.values[name]
        return f"{v.type}" + (f" {{{format_ndsbp(graph, v.sbp)}}}" if v.sbp is not None else "")

    for a, b in hops:
        sent = [layout(n) for n in edges[a].live_out]
        taken = [layout(n) for n in edges[b].live_in]
        if sent != taken:
            raise ParcError([Diagnostic(
                "E336", f"{where}: a path goes from stage {a} to stage {b}, but stage {a} "
                f"sends {'; '.join(sent) or 'nothing'} and stage {b} takes "
                f"{'; '.join(taken) or 'nothing'}", span,
                help="skipping or reordering needs stages whose input and output match "
                "(transformer blocks); keep the SBP of the activations the same across the "
                "blocks")], spec.sources)


def check_skips(spec: Spec, graph: Graph, schedule: Schedule) -> None:
    """Every hop of the schedule's paths, reported at the schedule line."""
    check_paths(spec, graph, len(schedule.stage_rank), schedule.paths,
                spec.parallel.schedule.span, "skip")
