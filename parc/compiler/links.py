"""The link each mesh axis communicates over, from the hardware block."""

from __future__ import annotations

from ..dsl.spec import HardwareSpec


def axis_link(mesh: tuple[tuple[str, int], ...], hw: HardwareSpec, axis: str,
              collective: bool = True) -> tuple[float, float]:
    """(bandwidth, latency) of the link a mesh axis's groups communicate over.

    Inside a node: NVLink. Across nodes, a point-to-point transfer has one GPU's network port;
    a ring collective is hierarchical (as NCCL builds it): with k members of the group in each
    node it runs k rings side by side, each crossing the node boundary on its own port, so the
    inter-node hops see k ports' bandwidth, and never more than NVLink carries inside the node.
    """
    names = [a for a, _ in mesh]
    sizes = dict(mesh)
    stride = 1
    for a in names[names.index(axis) + 1:]:
        stride *= sizes[a]
    span = stride * sizes[axis]
    per_node = hw.devices_per_node
    if span <= per_node or hw.inter_bw is None:
        return hw.intra_bw, hw.intra_latency
    latency = hw.inter_latency or hw.intra_latency
    members = max(1, min(sizes[axis], per_node // stride)) if collective else 1
    return min(hw.intra_bw, members * hw.inter_bw), latency
