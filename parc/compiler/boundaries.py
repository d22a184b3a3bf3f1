"""What crosses each pipeline stage boundary: the values a stage receives and sends.

A parameter passed along by communication (gathered, synced) never crosses: every stage that
reads it keeps its own copy (partition makes them).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.comm import COMMS
from .ir import Graph


def param_carriers(graph: Graph) -> dict[str, str]:
    """Values that are a parameter passed along by communication -> that parameter."""
    params = {p.name for p in graph.params}
    out: dict[str, str] = {}
    for op in graph.ops:
        if op.kind in COMMS and (op.inputs[0] in params or op.inputs[0] in out):
            out[op.outputs[0]] = out.get(op.inputs[0], op.inputs[0])
    return out


@dataclass(frozen=True, kw_only=True)
class Boundary:
    stage: int
    live_in: tuple[str, ...]  # values made on earlier stages and read here or later
    live_out: tuple[str, ...]  # values made here or earlier and read on later stages
    data_inputs: tuple[str, ...]  # model inputs read here


def stage_boundaries(graph: Graph, num_stages: int) -> list[Boundary]:
    """Every stage's boundary, values in the order they are made."""
    stage_of = {n: v.stage for n, v in graph.values.items()}
    produced_at = {out: stage_of[out] for op in graph.ops for out in op.outputs}
    readers: dict[str, set[int]] = {}
    for op in graph.ops:
        s = stage_of[op.outputs[0]]
        for name in op.inputs:
            readers.setdefault(name, set()).add(s)
    for _, name in graph.outputs:
        readers.setdefault(name, set()).add(num_stages - 1)
    carriers = param_carriers(graph)
    crossing = [n for n in produced_at if n not in carriers]
    out = []
    for s in range(num_stages):
        last = {n: max(readers.get(n, {-1})) for n in crossing}
        out.append(Boundary(
            stage=s,
            live_in=tuple(n for n in crossing if produced_at[n] < s and last[n] >= s),
            live_out=tuple(n for n in crossing if produced_at[n] <= s and last[n] > s),
            data_inputs=tuple(n for n in graph.inputs if s in readers.get(n, set()))))
    return out
