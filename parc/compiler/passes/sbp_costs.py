"""What the sbp pass and the sbp search both weigh: every value's type with `batch` bound,
an op's FLOPs on whole tensors, and the time of a conversion on an axis's link."""

from __future__ import annotations

from ...ops.catalog import CATALOG
from ...ops.comm import COMMS, backward_bytes, forward_bytes
from ...ops.costs import op_cost
from ..ir import Graph, Op

BACKWARD_COLLECTIVE = {"all_reduce": False, "reduce_scatter": True, "all_gather": True,
                       "all_to_all": True, "slice": True, "zero_fill": True, "to_partial": False}


class Types:
    """Every value's type with `batch` bound, worked out once."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.cache: dict[str, object] = {}

    def __getitem__(self, name: str):
        if name not in self.cache:
            self.cache[name] = self.graph.concrete(self.graph.values[name].type)
        return self.cache[name]


def op_flops(types: Types, op: Op) -> float:
    """Forward and backward FLOPs of an op on whole tensors (0 for communication)."""
    if op.kind in COMMS:
        return 0.0
    ins = [types[i] for i in op.inputs]
    outs = [types[o] for o in op.outputs]
    cost = op_cost(op.kind, ins, outs, CATALOG[op.kind].full_attrs(op.attrs))
    return float(cost.flops_fwd + sum(cost.flops_bwd))



def transfer_time(kind: str, size: float, differentiable: bool, ways: int, bandwidth: float,
                  latency: float) -> float:
    """Seconds of a conversion of `size` bytes over an axis of `ways` ranks, forward and (when
    differentiable) its backward image, by the alpha-beta model of the axis's link."""
    moved = forward_bytes(kind, size, ways) + backward_bytes(kind, size, ways, differentiable)
    collectives = int(COMMS[kind].collective) + int(differentiable and BACKWARD_COLLECTIVE[kind])
    return moved / (ways * bandwidth) + collectives * latency
