"""`parc calibrate`: measure this machine as the program's ranks see it, as a `hardware` block.

Every rank measures at once (they share the machine as a real job does): matmul FLOP/s in
f32 and bf16, memory bandwidth (a large copy), and the all-reduce time for a small and a
large message, from which the ring model gives link latency and bandwidth.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch
import torch.distributed as dist


def _best(fn, repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_compute(size: int = 512) -> dict:
    a32, b32 = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size ** 3
    f32 = flops / _best(lambda: torch.matmul(a32, b32))
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    bf16 = flops / _best(lambda: torch.matmul(a16, b16))
    src = torch.randn(16 * 1024 * 1024 // 4)
    dst = torch.empty_like(src)
    mem_bw = 2 * src.numel() * 4 / _best(lambda: dst.copy_(src))
    return {"flops_f32": f32, "flops_bf16": bf16, "mem_bw": mem_bw,
            "op_overhead": measure_overhead()}


def measure_overhead(blocks: int = 4) -> float:
    """Seconds per IR op beyond its arithmetic, from eager transformer-like blocks run forward
    and backward on tiny shapes (what each op of a generated stage costs to dispatch)."""
    from parc.runtime.functional import causal_attention

    d, heads = 32, 2
    x = torch.randn(2, 16, d, requires_grad=True)
    ws = [torch.randn(d, d, requires_grad=True) for _ in range(4 * blocks)]
    ln = torch.ones(d, requires_grad=True)

    def step():
        h = x
        for b in range(blocks):
            a = torch.nn.functional.layer_norm(h, (d,), ln, None)
            q, k, v = (torch.matmul(a, ws[4 * b + i]).unflatten(-1, (heads, -1)).transpose(1, 2)
                       for i in range(3))
            o = causal_attention(q, k, v).transpose(1, 2).flatten(-2)
            h = h + torch.matmul(o, ws[4 * b + 3])
        h.sum().backward()
    ir_ops = blocks * 13  # layer_norm, 3 x (matmul, split_heads), attention, merge, matmul, add
    return _best(step, repeat=5) / (3 * ir_ops)  # forward, input and weight gradients


def measure_link(world: int) -> dict:
    """Latency and per-link bandwidth from all-reduce times of a small and a large message."""
    small, large = torch.zeros(256), torch.zeros(4 * 1024 * 1024)
    t_small = _best(lambda: dist.all_reduce(small), repeat=20)
    t_large = _best(lambda: dist.all_reduce(large), repeat=5)
    steps = 2 * (world - 1)
    latency = t_small / steps
    moved = 2 * (world - 1) / world * large.numel() * 4
    bandwidth = moved / max(t_large - steps * latency, 1e-9)
    return {"intra_latency": latency, "intra_bw": bandwidth}


def worker(out_path: str) -> None:
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    dist.barrier()
    compute = measure_compute()
    figures = torch.tensor([compute["flops_f32"], compute["flops_bf16"], compute["mem_bw"],
                            -compute["op_overhead"]], dtype=torch.float64)
    dist.all_reduce(figures, op=dist.ReduceOp.MIN)  # the slowest rank sets the pace
    link = measure_link(world) if world > 1 else {"intra_latency": 1e-6, "intra_bw": 1e10}
    if dist.get_rank() == 0:
        result = {"devices": world, "flops_f32": float(figures[0]),
                  "flops_bf16": float(figures[1]), "mem_bw": float(figures[2]),
                  "op_overhead": -float(figures[3]), **link}
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    dist.barrier()
    dist.destroy_process_group()


def hardware_block(name: str, figures: dict, memory_bytes: float) -> str:
    return (f"# measured by `parc calibrate` on this machine\n"
            f"hardware {name} {{\n"
            f"  device cpu\n"
            f"  devices {figures['devices']}\n"
            f"  memory {memory_bytes / 1e9:.1f} GB\n"
            f"  flops_f32 {figures['flops_f32'] / 1e9:.2f} GFLOPS\n"
            f"  flops_bf16 {figures['flops_bf16'] / 1e9:.2f} GFLOPS\n"
            f"  mem_bw {figures['mem_bw'] / 1e9:.2f} GB/s\n"
            f"  intra_bw {figures['intra_bw'] / 1e9:.3f} GB/s\n"
            f"  intra_latency {figures['intra_latency'] * 1e6:.1f} us\n"
            f"  efficiency 1.0\n"
            f"  op_overhead {figures['op_overhead'] * 1e6:.1f} us\n"
            f"}}\n")


def machine_memory() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8e9


if __name__ == "__main__":
    worker(sys.argv[1])
