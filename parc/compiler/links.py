"""The link each mesh axis communicates over, from the hardware block.

Devices are numbered in mesh order (the last axis varies fastest), as the runtime builds its
mesh, and fill the nodes in order (`devices_per_node`). With `regions`, a transfer between
nodes of two regions takes that pair's `region_bw` and `region_latency` (hardware.py).
"""

from __future__ import annotations

import itertools

from ..dsl.spec import HardwareSpec

Mesh = tuple[tuple[str, int], ...]


def _strides(mesh: Mesh) -> dict[str, int]:
    out, stride = {}, 1
    for name, size in reversed(mesh):
        out[name] = stride
        stride *= size
    return out


def _offsets(mesh: Mesh, axis: str) -> list[int]:
    """The device number of every position of the other axes (the axis's coordinate 0)."""
    strides = _strides(mesh)
    others = [(strides[a], n) for a, n in mesh if a != axis]
    return [sum(s * c for (s, _), c in zip(others, coords))
            for coords in itertools.product(*(range(n) for _, n in others))]


def axis_link(mesh: Mesh, hw: HardwareSpec, axis: str,
              collective: bool = True) -> tuple[float, float]:
    """(bandwidth, latency) of the link a mesh axis's groups communicate over.

    Inside a node: NVLink. Across nodes, a point-to-point transfer has one GPU's network port;
    a ring collective is hierarchical (as NCCL builds it): with k members of the group in each
    node it runs k rings side by side, each crossing the node boundary on its own port, so the
    inter-node hops see k ports' bandwidth, and never more than NVLink carries inside the node.
    A group spread over regions runs at its slowest link between them.
    """
    sizes = dict(mesh)
    stride = _strides(mesh)[axis]
    span = stride * sizes[axis]
    per_node = hw.devices_per_node
    if span <= per_node or hw.inter_bw is None:
        return hw.intra_bw, hw.intra_latency
    bandwidth, latency = hw.inter_bw, hw.inter_latency or hw.intra_latency
    if hw.regions is not None:
        for offset in _offsets(mesh, axis):
            nodes = sorted({hw.node_of(offset + c * stride) for c in range(sizes[axis])})
            for a, b in itertools.combinations(nodes, 2):
                bw, lat = hw.link(a * per_node, b * per_node)
                bandwidth, latency = min(bandwidth, bw), max(latency, lat)
    members = max(1, min(sizes[axis], per_node // stride)) if collective else 1
    return min(hw.intra_bw, members * bandwidth), latency


def pipeline_links(mesh: Mesh, hw: HardwareSpec, src: int,
                   dst: int) -> frozenset[tuple[float, float]]:
    """The (bandwidth, latency) links a transfer from pipeline rank `src` to `dst` crosses:
    every position of the other axes sends at once, so it takes as long as the slowest."""
    stride = _strides(mesh)["pp"]
    return frozenset(hw.link(offset + src * stride, offset + dst * stride)
                     for offset in _offsets(mesh, "pp"))
