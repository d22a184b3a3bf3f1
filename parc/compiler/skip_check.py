"""A skip schedule sends a stage's input straight to the stage after it: every stage a path
skips must send on exactly what it receives (the same tensors, shapes and SBP), or the next
stage would take another layout for its input."""

from __future__ import annotations

from ..dsl.diagnostics import Diagnostic, ParcError
from ..dsl.spec import Spec
from .boundaries import stage_boundaries
from .ir import Graph, format_ndsbp
from .schedules import Schedule


def check_skips(spec: Spec, graph: Graph, schedule: Schedule) -> None:
    """Raise a diagnostic at the schedule line when a skippable stage changes its tensors."""
    num = len(schedule.stage_rank)
    skipped = sorted({s for s in range(num) for path in schedule.paths if s not in path})
    if not skipped:
        return
    edges = stage_boundaries(graph, num)

    def layout(name: str) -> str:
        v = graph.values[name]
        return f"{v.type}" + (f" {{{format_ndsbp(graph, v.sbp)}}}" if v.sbp is not None else "")

    for s in skipped:
        sent = [layout(n) for n in edges[s].live_out]
        taken = [layout(n) for n in edges[s].live_in]
        if sent != taken:
            raise ParcError([Diagnostic(
                "E336", f"skip: stage {s} receives {'; '.join(taken) or 'nothing'} but sends "
                f"{'; '.join(sent) or 'nothing'}: a path that skips it would hand the next "
                "stage another layout than it takes", spec.parallel.schedule.span,
                help="skip needs stages whose input and output match (transformer blocks); "
                "keep the SBP of the activations the same across the blocks")], spec.sources)
