"""Which values are parameters gathered where they are used (ZeRO over an axis that splits a
parameter), for the code generator and the memory model alike.

A parameter split over an axis and read whole is all-gathered by the boxing pass. Such a
gather (or a chain of them, one per axis, each read by the next alone) runs as FSDP does:
gathered before use, freed after, gathered again for the backward, its gradient summed over
the microbatches and reduce-scattered once per step (runtime/gathered.py). So the whole tensor
is never held per microbatch; under `precision bf16` a gather read only by matmuls casts the
shard first, as autocast would cast the whole tensor at the matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ir import Graph, Op
from .step_sync import step_syncs


@dataclass(frozen=True, kw_only=True)
class Gather:
    param: str
    output: str  # the whole (or less split) parameter the ops read
    steps: tuple[tuple[str, int, bool], ...]  # (axis, dim, whole gradient), in gather order
    inner: tuple[str, ...]  # results of the chain's earlier gathers (not written as code)
    dtype: str | None  # "bf16": the shard is cast before gathering


def gathered_params(graph: Graph, precision: str = "f32") -> dict[str, Gather]:
    """The result of each parameter gather chain -> how it is gathered."""
    params = {p.name for p in graph.params}
    synced = step_syncs(graph)
    readers: dict[str, list[Op]] = {}
    for op in graph.ops:
        for name in dict.fromkeys(op.inputs):
            readers.setdefault(name, []).append(op)

    def root(name: str) -> str | None:
        while name in synced:
            name = synced[name]
        return name if name in params else None

    found: dict[str, Gather] = {}
    chains: dict[str, Gather] = {}  # a gather's result -> its chain so far
    for op in graph.ops:
        if op.kind != "all_gather":
            continue
        source = op.inputs[0]
        axis = op.attr("axis")
        step = (axis, graph.values[source].sbp.on(axis).dim, op.attr("grad") == "whole")
        if source in chains:
            before = chains.pop(source)
            found.pop(before.output)
            g = Gather(param=before.param, output=op.outputs[0], steps=before.steps + (step,),
                       inner=before.inner + (source,), dtype=None)
        elif root(source) is not None:
            g = Gather(param=root(source), output=op.outputs[0], steps=(step,), inner=(),
                       dtype=None)
        else:
            continue
        out = readers.get(op.outputs[0], [])
        if len(out) == 1 and out[0].kind == "all_gather":
            chains[op.outputs[0]] = g
        found[op.outputs[0]] = g
    for name, g in list(found.items()):
        if precision == "bf16" and readers.get(name) and all(
                r.kind == "matmul" for r in readers[name]):
            found[name] = Gather(param=g.param, output=g.output, steps=g.steps,
                                 inner=g.inner, dtype="bf16")
    return found


def working_set(gathers: list[tuple[float, float]]) -> float:
    """The most bytes of whole gathered parameters alive at once, from (gathered bytes, f32
    bytes) in the order the forward reads them: in the forward the one in use and the next
    one, prefetched; in the backward the one gathered again, its whole gradient and the one
    before it, prefetched."""
    peak = 0.0
    for k, (size, f32) in enumerate(gathers):
        after = gathers[k + 1][0] if k + 1 < len(gathers) else 0.0
        before = gathers[k - 1][0] if k > 0 else 0.0
        peak = max(peak, size + after, size + f32 + before)
    return peak
