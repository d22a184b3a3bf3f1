"""The pass pipeline: `elaborate` turns a checked spec into a Graph, then each pass is a named
function Graph -> Graph, in one ordered list that can be printed and stopped after any pass."""

from __future__ import annotations

from collections.abc import Callable

from ...dsl.spec import Spec
from ..ir import Graph
from ..verify import verify as verify_graph
from .boxing import boxing
from .context import PassContext
from .elaborate import elaborate
from .sbp import sbp
from .shapes import shapes

PASSES: list[tuple[str, Callable[[Graph, PassContext], Graph]]] = [
    ("shapes", lambda graph, context: shapes(graph)),
    ("sbp", sbp),
    ("boxing", lambda graph, context: boxing(graph)),
]
PASS_NAMES = ["elaborate"] + [name for name, _ in PASSES] + ["partition", "fuse"]


def run_passes(graph: Graph, names: list[str], verify: bool = False,
               context: PassContext | None = None) -> Graph:
    """Run the named passes (in pipeline order) on a graph."""
    context = context or PassContext()
    for name, fn in PASSES:
        if name in names:
            graph = fn(graph, context)
            if verify:
                verify_graph(graph)
    return graph


def lower(spec: Spec, after: str = "boxing", verify: bool = False) -> Graph:
    """The spec's graph after pass `after`, one of the passes up to boxing (every pass up to
    it runs, in order). partition and fuse need the hardware and the schedule: the plan runs
    them (`plan.planned_graph`)."""
    assert after in PASS_NAMES[:PASS_NAMES.index("partition")], after
    graph = elaborate(spec)
    if verify:
        verify_graph(graph)
    upto = PASS_NAMES.index(after)
    context = PassContext(hardware=spec.parallel.hardware, precision=spec.train.precision,
                          sequence_parallel=spec.parallel.sequence_parallel,
                          context_parallel=spec.parallel.context_parallel,
                          auto_sbp=spec.parallel.auto_sbp) \
        if spec.parallel is not None and spec.train is not None else None
    return run_passes(graph, PASS_NAMES[1:upto + 1], verify, context)
