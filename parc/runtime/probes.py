"""The measurements `parc calibrate` takes, one function each, on the CPU or a CUDA device.

Each returns the seconds of one run of what it measures: the fastest of several timed runs
after a warm-up (what the machine achieves, not what it typically does). calibrate.py turns
the seconds into the hardware block's figures. On CPU a run is timed with the host's clock;
on a GPU with CUDA events around it, the runs queued back to back and the host waiting only
at the end, so the time is the device's and not the host's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How large each measurement is and how often it runs."""

    gemm: int  # side of the square matmuls
    copy_bytes: int  # the buffer copied for memory bandwidth
    launches: int  # tiny kernels timed together
    small_bytes: int  # a message whose time is latency
    large_bytes: int  # a message whose time is bandwidth
    repeat: int  # timed runs (the fastest counts)
    latency_repeat: int  # timed runs of the small message (its time is noisier)
    warmup: int  # untimed runs first (NCCL builds its communicators, cuBLAS picks kernels)

    def __post_init__(self):
        assert all(getattr(self, f.name) > 0 for f in fields(self)), self


def sizes_for(device_type: str) -> Sizes:
    """Sizes that saturate the device yet keep the whole calibration within seconds."""
    if device_type == "cuda":
        # an 8192^2 bf16 GEMM (1.1 TFLOP) fills every SM of an H100/H200 for ~1.5 ms; a 1 GiB
        # copy is far beyond L2 (50-60 MB); NCCL reaches its bus bandwidth from ~256 MB
        return Sizes(gemm=8192, copy_bytes=1 << 30, launches=2000, small_bytes=1024,
                     large_bytes=256 << 20, repeat=10, latency_repeat=50, warmup=3)
    assert device_type == "cpu", device_type
    # one core per process: a 512^2 matmul is already compute bound, 16 MiB beyond the caches
    return Sizes(gemm=512, copy_bytes=16 << 20, launches=200, small_bytes=1024,
                 large_bytes=16 << 20, repeat=5, latency_repeat=20, warmup=1)


def host_times(fn: Callable[[], object], repeat: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def device_times(fn: Callable[[], object], repeat: int, warmup: int) -> list[float]:
    """Seconds of each run on the current CUDA stream (NCCL's streams join it: a blocking
    collective makes the current stream wait for its own)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(repeat)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def fastest(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int) -> float:
    timer = device_times if device.type == "cuda" else host_times
    return min(timer(fn, repeat, warmup))


def gemm_seconds(device: torch.device, dtype: torch.dtype, sizes: Sizes) -> float:
    """One square matmul of side `sizes.gemm` in `dtype` (f32 as torch runs it by default:
    without TF32, as the generated programs do)."""
    a, b = (torch.randn(sizes.gemm, sizes.gemm, device=device).to(dtype) for _ in range(2))
    out = torch.empty_like(a)
    return fastest(lambda: torch.matmul(a, b, out=out), device, sizes.repeat, sizes.warmup)


def copy_seconds(device: torch.device, sizes: Sizes) -> float:
    """One copy of `sizes.copy_bytes` from one buffer to another (read once, written once)."""
    src = torch.randn(sizes.copy_bytes // 4, device=device)
    dst = torch.empty_like(src)
    return fastest(lambda: dst.copy_(src), device, sizes.repeat, sizes.warmup)


def launch_seconds(device: torch.device, sizes: Sizes) -> float:
    """`sizes.launches` kernels on one element each: what launching (or dispatching) costs."""
    x = torch.zeros(1, device=device)

    def launches():
        for _ in range(sizes.launches):
            x.add_(1.0)
    return fastest(launches, device, sizes.repeat, sizes.warmup)


EAGER_BLOCKS = 4
EAGER_OPS = EAGER_BLOCKS * 13 * 3  # per block: layer_norm, 3 x (matmul, split_heads),
# attention, merge, matmul, add; forward, input gradients and weight gradients


def eager_seconds(device: torch.device, sizes: Sizes) -> float:
    """Transformer-like blocks on tiny shapes, forward and backward, in eager torch: `EAGER_OPS`
    IR ops whose arithmetic takes no time, so the time is what each op costs to run at all."""
    from .functional import causal_attention

    d, heads = 32, 2
    x = torch.randn(2, 16, d, device=device, requires_grad=True)
    ws = [torch.randn(d, d, device=device, requires_grad=True) for _ in range(4 * EAGER_BLOCKS)]
    ln = torch.ones(d, device=device, requires_grad=True)

    def step():
        h = x
        for b in range(EAGER_BLOCKS):
            a = torch.nn.functional.layer_norm(h, (d,), ln, None)
            q, k, v = (torch.matmul(a, ws[4 * b + i]).unflatten(-1, (heads, -1)).transpose(1, 2)
                       for i in range(3))
            o = causal_attention(q, k, v).transpose(1, 2).flatten(-2)
            h = h + torch.matmul(o, ws[4 * b + 3])
        h.sum().backward()
    return fastest(step, device, sizes.repeat, sizes.warmup)


def all_reduce_seconds(nbytes: int, device: torch.device, group, repeat: int,
                       warmup: int) -> float:
    """One all-reduce of `nbytes` of f32 over `group` (None: every rank); every member calls
    it."""
    t = torch.zeros(nbytes // 4, device=device)
    return fastest(lambda: dist.all_reduce(t, group=group), device, repeat, warmup)


def round_trip_seconds(nbytes: int, device: torch.device, peer: int, first: bool, repeat: int,
                       warmup: int) -> float:
    """A message of `nbytes` to `peer` and back; the `first` rank sends first, the peer calls
    this too (its time is the same round trip seen from the other end)."""
    t = torch.zeros(nbytes // 4, device=device)

    def ping():
        dist.send(t, peer)
        dist.recv(t, peer)

    def pong():
        dist.recv(t, peer)
        dist.send(t, peer)
    return fastest(ping if first else pong, device, repeat, warmup)
