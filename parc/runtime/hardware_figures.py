"""What `parc calibrate` measured, from seconds to the `hardware` block: pure functions of
timings, ranks and figures (calibrate.py runs the job, probes.py times the device), so that
what a GPU calibration writes is tested on any machine."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Figures:
    """What a calibration measured, per device; bandwidths in B/s, times in s."""

    device: str  # "cpu" or "cuda"
    device_name: str
    devices: int
    devices_per_node: int
    memory: float  # bytes per device
    flops_f32: float
    flops_bf16: float
    mem_bw: float
    op_overhead: float  # an eager IR op
    launch_overhead: float  # a tiny kernel
    intra_bw: float  # ring all-reduce within a node
    intra_latency: float
    intra_p2p_bw: float | None = None  # None: nothing measured (one device per node)
    intra_p2p_latency: float | None = None
    inter_bw: float | None = None  # None: one node
    inter_latency: float | None = None
    inter_p2p_bw: float | None = None
    inter_p2p_latency: float | None = None

# ---- from seconds to figures (pure) ---------------------------------------------------------

def gemm_rate(size: int, seconds: float) -> float:
    return 2 * size ** 3 / seconds


def copy_rate(nbytes: int, seconds: float) -> float:
    return 2 * nbytes / seconds  # read once, written once


def _beyond(total: float, latency: float) -> float:
    """The time a message's bytes took: its time less the latency, or (where the two
    measurements' noise leaves nothing) all of it."""
    rest = total - latency
    return rest if rest > 0 else total


def ring_link(members: int, small_s: float, large_s: float,
              large_bytes: int) -> tuple[float, float]:
    """(bandwidth, latency) per device of a ring from the all-reduce times of a small and a
    large message: the inverse of comm.ring_time (2 (n - 1) steps, 2 (n - 1) / n of the
    message through each device)."""
    steps = 2 * (members - 1)
    latency = small_s / steps
    moved = 2 * (members - 1) / members * large_bytes
    return moved / _beyond(large_s, steps * latency), latency


def p2p_link(small_round_s: float, large_round_s: float,
             large_bytes: int) -> tuple[float, float]:
    """(bandwidth, latency) one way, from round trips of a small and a large message."""
    latency = small_round_s / 2
    return large_bytes / _beyond(large_round_s / 2, latency), latency


# ---- which ranks measure which link (pure) ----------------------------------------------------

def nodes_of(world: int, local_world: int) -> list[int]:
    """The node of every rank: torchrun numbers the ranks node by node."""
    if local_world < 1 or world % local_world:
        raise ValueError(f"{world} ranks do not fill nodes of {local_world}")
    return [rank // local_world for rank in range(world)]


def link_pairs(nodes: list[int]) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(a pair of ranks on one node, a pair on two nodes), both with rank 0 (None where there
    is none): rank 0 takes part in every measurement and so holds every figure."""
    same = [r for r in range(1, len(nodes)) if nodes[r] == nodes[0]]
    other = [r for r in range(1, len(nodes)) if nodes[r] != nodes[0]]
    return ((0, same[0]) if same else None), ((0, other[0]) if other else None)


def backend_for(cuda: bool, gpus: int, local_world: int) -> str:
    """NCCL on GPUs where every local rank has one of its own; gloo on CPU otherwise."""
    return "nccl" if cuda and gpus >= local_world else "gloo"

def complete(links: dict) -> dict:
    """The links the block needs: with one device nothing was measured (no link is used),
    with one device per node the link within a node is never used (it takes the one across)."""
    if links["intra_bw"] is None:
        fallback = (links["inter_bw"], links["inter_latency"])
        if fallback[0] is None:
            fallback = (1e10, 1e-6)
        links = {**links, "intra_bw": fallback[0], "intra_latency": fallback[1]}
    return links

# ---- the block ------------------------------------------------------------------------------

_UNITS = {"flops": ((1e12, "TFLOPS"), (1e9, "GFLOPS"), (1.0, "FLOPS")),
          "bandwidth": ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1.0, "B/s")),
          "bytes": ((1e9, "GB"),), "time": ((1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))}


def quantity_text(value: float, kind: str) -> str:
    """`value` with the largest unit it fills, to four significant digits: `989.2 TFLOPS`."""
    assert value > 0 and math.isfinite(value), (kind, value)
    scale, unit = next(((s, u) for s, u in _UNITS[kind] if value >= s), _UNITS[kind][-1])
    number = value / scale
    decimals = max(0, 3 - math.floor(math.log10(number)))
    return f"{number:.{decimals}f} {unit}"


def _p2p_note(bw: float | None, latency: float | None) -> str:
    return "" if bw is None else \
        f"; point-to-point {quantity_text(bw, 'bandwidth')}, {quantity_text(latency, 'time')}"


def hardware_block(name: str, f: Figures) -> str:
    nodes = f.devices // f.devices_per_node
    ring = f"ring all-reduce over {min(f.devices, f.devices_per_node)} devices" \
        if f.devices_per_node > 1 else "not measured: one device per node"
    lines = [f"# measured by `parc calibrate`: {f.devices} x {f.device_name}"
             + (f" on {nodes} nodes" if nodes > 1 else ""),
             f"hardware {name} {{",
             f"  device {f.device}",
             f"  devices {f.devices}",
             f"  devices_per_node {f.devices_per_node}",
             f"  memory {quantity_text(f.memory, 'bytes')}",
             f"  flops_f32 {quantity_text(f.flops_f32, 'flops')}",
             f"  flops_bf16 {quantity_text(f.flops_bf16, 'flops')}",
             f"  mem_bw {quantity_text(f.mem_bw, 'bandwidth')}",
             f"  intra_bw {quantity_text(f.intra_bw, 'bandwidth')}"
             + (f"  # {ring}{_p2p_note(f.intra_p2p_bw, f.intra_p2p_latency)}"
                if f.devices > 1 else "  # one device: no link measured"),
             f"  intra_latency {quantity_text(f.intra_latency, 'time')}"]
    if f.inter_bw is not None:
        lines += [f"  inter_bw {quantity_text(f.inter_bw, 'bandwidth')}  # all-reduce of a pair on "
                  f"two nodes{_p2p_note(f.inter_p2p_bw, f.inter_p2p_latency)}",
                  f"  inter_latency {quantity_text(f.inter_latency, 'time')}"]
    lines += ["  efficiency 1.0  # the figures are achieved ones, not peaks",
              f"  op_overhead {quantity_text(f.op_overhead, 'time')}  # an eager IR op; a tiny "
              f"kernel alone {quantity_text(f.launch_overhead, 'time')}",
              "}"]
    return "\n".join(lines) + "\n"
