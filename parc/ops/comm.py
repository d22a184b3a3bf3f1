"""Communication ops: the boxing conversions between SBPs on one mesh axis, and their costs.

Costs are total bytes moved over the axis for a tensor of T bytes on n devices, as OneFlow
counts them: S(i)->S(j) T(n-1)/n; S->B and P->S T(n-1); P->B 2T(n-1); B->S, B->P and S->P move
nothing. Each conversion also has a backward image (the gradient flows the other way).
"""

from __future__ import annotations

from dataclasses import dataclass

from .sbp import Sbp

# Parameter gradients are all-reduced once per step in buckets of about this size (the runtime
# packs them; the cost model charges each bucket one collective's latency).
SYNC_BUCKET_BYTES = 25 * 2**20


@dataclass(frozen=True)
class Comm:
    kind: str
    src: str  # SBP kind before
    dst: str  # SBP kind after
    collective: bool  # moves data between devices in the forward pass
    doc: str


COMMS = {c.kind: c for c in [
    Comm("all_reduce", "P", "B", True, "sum partial values; every rank gets the total"),
    Comm("reduce_scatter", "P", "S", True, "sum partial values; each rank keeps its slice"),
    Comm("all_gather", "S", "B", True, "concatenate slices; every rank gets the whole"),
    Comm("all_to_all", "S", "S", True, "re-split along another dim"),
    Comm("slice", "B", "S", False, "keep this rank's slice of a replicated tensor"),
    Comm("zero_fill", "B", "P", False, "rank 0 keeps the value, the others hold zeros"),
    Comm("to_partial", "S", "P", False, "place the local slice in zeros of the full shape"),
    Comm("grad_all_reduce", "B", "B", False, "identity forward; all-reduce of the gradient"),
]}


def boxing_kind(src: Sbp, dst: Sbp) -> str | None:
    """The conversion from src to dst on one axis (None when they are equal)."""
    if src == dst:
        return None
    if src.kind == "S" and dst.kind == "S":
        return "all_to_all"
    for comm in COMMS.values():
        if (comm.src, comm.dst) == (src.kind, dst.kind) and comm.kind != "grad_all_reduce":
            return comm.kind
    raise AssertionError(f"no conversion {src} -> {dst}")


def forward_bytes(kind: str, size: int, n: int) -> float:
    """Total bytes a conversion moves in the forward pass."""
    return {"all_reduce": 2.0 * size * (n - 1), "reduce_scatter": float(size * (n - 1)),
            "all_gather": float(size * (n - 1)), "all_to_all": size * (n - 1) / n}.get(kind, 0.0)


def backward_bytes(kind: str, size: int, n: int, differentiable: bool) -> float:
    """Total bytes the gradient of a conversion moves (its backward image)."""
    if not differentiable:
        return 0.0
    return {"all_reduce": 0.0, "reduce_scatter": float(size * (n - 1)),  # all-gather of grads
            "all_gather": float(size * (n - 1)),  # reduce-scatter of grads
            "all_to_all": size * (n - 1) / n,
            "slice": 2.0 * size * (n - 1),  # the replicated input's gradient must be summed
            "zero_fill": 2.0 * size * (n - 1),
            "to_partial": 0.0,
            "grad_all_reduce": 2.0 * size * (n - 1)}[kind]


def ring_time(kind: str, size: int, n: int, bandwidth: float, latency: float) -> float:
    """Alpha-beta time of one collective on a ring of n devices (per-device link bandwidth)."""
    if n <= 1:
        return 0.0
    steps = {"all_reduce": 2 * (n - 1), "reduce_scatter": n - 1, "all_gather": n - 1,
             "all_to_all": n - 1, "grad_all_reduce": 2 * (n - 1)}.get(kind, 0)
    per_device = {"all_reduce": 2 * size * (n - 1) / n, "grad_all_reduce": 2 * size * (n - 1) / n,
                  "reduce_scatter": size * (n - 1) / n, "all_gather": size * (n - 1) / n,
                  "all_to_all": size * (n - 1) / (n * n)}.get(kind, 0.0)
    return steps * latency + per_device / bandwidth
