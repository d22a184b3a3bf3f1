"""`parc calibrate`: measure this machine as the program's ranks see it, as a `hardware` block.

Every rank measures its device at once (they share the machine as a real job does): matmul
FLOP/s in f32 and bf16, memory bandwidth (a large copy), what a tiny kernel and an eager IR op
cost; the slowest rank's figures count. On GPUs (NCCL) that is the GPU's HBM and tensor
cores; on CPU (gloo) the processes' share of the cores and DRAM. Then the links: all-reduce
times of a small and a large message over the first node's ranks give the link within a node
(the ring model's latency per step and bandwidth per device, as the cost model charges
collectives), the same over a pair of ranks on two nodes the link between nodes; a message
sent to and back from a rank on the same node, and one on another node, the point-to-point
figures (kept as comments: the block has one figure per link).

    python -m torch.distributed.run --nproc_per_node=N -m parc.runtime.calibrate FIGURES.json
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from . import probes
from .hardware_figures import (
    Figures,
    backend_for,
    complete,
    copy_rate,
    gemm_rate,
    link_pairs,
    nodes_of,
    p2p_link,
    ring_link,
)

RATES = ("flops_f32", "flops_bf16", "mem_bw", "memory")  # the slowest rank: the least
TIMES = ("op_overhead", "launch_overhead")  # the slowest rank: the most
LINKS = ("intra_bw", "intra_latency", "intra_p2p_bw", "intra_p2p_latency", "inter_bw",
         "inter_latency", "inter_p2p_bw", "inter_p2p_latency")


def measure_device(device: torch.device, sizes: probes.Sizes, local_world: int) -> dict:
    """This rank's compute and memory figures."""
    if device.type == "cuda":
        memory = float(torch.cuda.get_device_properties(device).total_memory)
    else:
        memory = machine_memory() / local_world
    return {"flops_f32": gemm_rate(sizes.gemm, probes.gemm_seconds(device, torch.float32, sizes)),
            "flops_bf16": gemm_rate(sizes.gemm,
                                    probes.gemm_seconds(device, torch.bfloat16, sizes)),
            "mem_bw": copy_rate(sizes.copy_bytes, probes.copy_seconds(device, sizes)),
            "memory": memory,
            "op_overhead": probes.eager_seconds(device, sizes) / probes.EAGER_OPS,
            "launch_overhead": probes.launch_seconds(device, sizes) / sizes.launches}


def slowest(figures: dict, device: torch.device) -> dict:
    """Every rank's figures reduced to the slowest rank's."""
    values = [figures[k] for k in RATES] + [-figures[k] for k in TIMES]
    packed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MIN)
    out = dict(zip(RATES, packed[:len(RATES)].tolist()))
    return {**out, **dict(zip(TIMES, (-packed[len(RATES):]).tolist()))}


def _ring(members: list[int], group, device, sizes) -> tuple[float, float]:
    small = probes.all_reduce_seconds(sizes.small_bytes, device, group, sizes.latency_repeat,
                                      sizes.warmup)
    large = probes.all_reduce_seconds(sizes.large_bytes, device, group, sizes.repeat,
                                      sizes.warmup)
    return ring_link(len(members), small, large, sizes.large_bytes)


def _p2p(pair: tuple[int, int], device, sizes) -> tuple[float, float]:
    rank = dist.get_rank()
    peer, first = (pair[1], True) if rank == pair[0] else (pair[0], False)
    small = probes.round_trip_seconds(sizes.small_bytes, device, peer, first,
                                      sizes.latency_repeat, sizes.warmup)
    large = probes.round_trip_seconds(sizes.large_bytes, device, peer, first, sizes.repeat,
                                      sizes.warmup)
    return p2p_link(small, large, sizes.large_bytes)


def measure_links(nodes: list[int], device: torch.device, sizes: probes.Sizes) -> dict:
    """The link figures, on every rank (rank 0 measures them all, then shares them)."""
    rank, out = dist.get_rank(), {}
    node0 = [r for r, n in enumerate(nodes) if n == nodes[0]]
    same, across = link_pairs(nodes)
    # every rank creates every group (new_group is collective); only members measure
    ring = None if len(node0) in (1, len(nodes)) else dist.new_group(node0)
    pair = dist.new_group(list(across)) if across else None
    if len(node0) > 1 and rank in node0:
        out["intra_bw"], out["intra_latency"] = _ring(node0, ring, device, sizes)
    dist.barrier()
    if same and rank in same:
        out["intra_p2p_bw"], out["intra_p2p_latency"] = _p2p(same, device, sizes)
    dist.barrier()
    if across and rank in across:
        out["inter_bw"], out["inter_latency"] = _ring(list(across), pair, device, sizes)
        out["inter_p2p_bw"], out["inter_p2p_latency"] = _p2p(across, device, sizes)
    dist.barrier()
    shared = torch.tensor([out.get(k, math.nan) for k in LINKS], dtype=torch.float64,
                          device=device)
    dist.broadcast(shared, src=0)
    return {k: (None if math.isnan(v) else v) for k, v in zip(LINKS, shared.tolist())}


def worker(out_path: str) -> None:
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    backend = backend_for(torch.cuda.is_available(), torch.cuda.device_count(), local_world)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else \
        torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    nodes = nodes_of(world, local_world)
    assert nodes[rank] == int(os.environ.get("GROUP_RANK", nodes[rank])), \
        "torchrun numbers the ranks node by node"
    sizes = probes.sizes_for(device.type)
    dist.barrier()
    compute = slowest(measure_device(device, sizes, local_world), device)
    links = complete(measure_links(nodes, device, sizes))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU processes"
    figures = Figures(device=device.type, device_name=name, devices=world,
                      devices_per_node=local_world, **compute, **links)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # on every node: each prints the block
        Path(out_path).write_text(json.dumps(asdict(figures)))
    dist.barrier()
    dist.destroy_process_group()


def run_job(devices: int, torchrun_args: list[str] | tuple[str, ...] = ()) -> Figures:
    """Calibrate with `devices` processes on this machine (per node, with torchrun's multi-node
    flags); RuntimeError with what the ranks printed when it fails."""
    from .launch import rendezvous

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "torch.distributed.run", *rendezvous(torchrun_args),
                   f"--nproc_per_node={devices}", "--max-restarts=0", *torchrun_args,
                   "-m", "parc.runtime.calibrate", str(out)]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(failure_text(result.stderr))
        return Figures(**json.loads(out.read_text()))


def failure_text(stderr: str) -> str:
    """The first error a rank raised, else the end of what torchrun printed."""
    for line in stderr.splitlines():
        if re.match(r"(\[rank\d+\]:\s*)?[\w.]+(Error|Exception)\b", line) and \
                "ChildFailedError" not in line:
            return line.strip()
    return stderr.strip()[-2000:]

def machine_memory() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8e9


if __name__ == "__main__":
    worker(sys.argv[1])
