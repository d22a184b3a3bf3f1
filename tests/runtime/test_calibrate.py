"""`parc calibrate`: the figures from timings, the ranks that measure each link, the block it
writes (parc's own parser reads it back and plans on it), and a real two-process calibration
against measurements this test takes itself."""

import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from parc.cli import main
from parc.compiler.plan import make_plan
from parc.dsl.check import check_file, check_text
from parc.ops.comm import ring_time
from parc.runtime import probes
from parc.runtime.hardware_figures import (
    Figures,
    backend_for,
    hardware_block,
    link_pairs,
    nodes_of,
    p2p_link,
    quantity_text,
    ring_link,
)

ROOT = Path(__file__).resolve().parents[2]

CPU = Figures(device="cpu", device_name="CPU processes", devices=4, devices_per_node=4,
              memory=6e9, flops_f32=3.2e10, flops_bf16=1e11, mem_bw=2.8e10, op_overhead=7e-6,
              launch_overhead=2e-6, intra_bw=1e9, intra_latency=1.2e-4, intra_p2p_bw=2e9,
              intra_p2p_latency=4e-5)
# two nodes of four GPUs, about what an HGX H200 pair measures
GPUS = Figures(device="cuda", device_name="NVIDIA H200", devices=8, devices_per_node=4,
               memory=150.1e9, flops_f32=51.3e12, flops_bf16=712.4e12, mem_bw=4.02e12,
               op_overhead=31e-6, launch_overhead=2.4e-6, intra_bw=3.6e11, intra_latency=0.9e-6,
               intra_p2p_bw=3.8e11, intra_p2p_latency=7e-6, inter_bw=4.6e10,
               inter_latency=8.5e-6, inter_p2p_bw=4.7e10, inter_p2p_latency=9e-6)


def spec_on(hardware_file: str, mesh: str) -> str:
    """gpt_tiny on the hardware block of another file, which it `use`s."""
    text = (ROOT / "examples/gpt_tiny.par").read_text()
    text = text.replace("hardware cpu4 = std.hw.cpu(devices = 4)", f'use "{hardware_file}"')
    sbp = "  sbp {\n    tokens, targets: S(0)@dp\n  }\n" if "dp" in mesh else ""
    block = f"parallel on calibrated {{\n  mesh ({mesh})\n{sbp}  stages auto\n  schedule 1f1b\n}}"
    return re.sub(r"parallel on cpu4 \{.*?\n\}", lambda m: block, text, flags=re.S)


@pytest.mark.parametrize("figures", [CPU, GPUS], ids=["cpu", "2x4_gpus"])
def test_the_block_reads_back_as_the_figures(figures):
    hw = check_text(hardware_block("calibrated", figures), "hw.par").hardware["calibrated"]
    assert (hw.device, hw.devices, hw.devices_per_node) == (figures.device, figures.devices,
                                                             figures.devices_per_node)
    for key in ("memory", "flops_f32", "flops_bf16", "mem_bw", "intra_bw", "intra_latency",
                "inter_bw", "inter_latency", "op_overhead"):
        want = getattr(figures, key)
        assert getattr(hw, key) == (want if want is None else pytest.approx(want, rel=5e-4)), key
    assert hw.efficiency == 1.0


def test_one_device_writes_a_block_without_links():
    one = replace(CPU, devices=1, devices_per_node=1, intra_p2p_bw=None, intra_p2p_latency=None)
    block = hardware_block("calibrated", one)
    assert "no link measured" in block and "point-to-point" not in block
    assert check_text(block, "hw.par").hardware["calibrated"].devices == 1


def test_a_spec_using_the_calibrated_file_checks_and_plans(tmp_path, capsys):
    (tmp_path / "calibrated.par").write_text(hardware_block("calibrated", GPUS))
    (tmp_path / "spec.par").write_text(spec_on("calibrated.par", "pp = 2, dp = 4"))
    assert main(["check", str(tmp_path / "spec.par")]) == 0
    assert "on calibrated" in capsys.readouterr().out
    plan = make_plan(check_file(tmp_path / "spec.par"))
    assert plan.predicted_step_s > 0 and plan.fits


@pytest.mark.parametrize("members", [2, 4, 8])
def test_ring_link_inverts_the_cost_models_ring_time(members):
    bandwidth, latency, large = 3.6e11, 2e-6, 256 << 20
    small_s = ring_time("all_reduce", 1024, members, bandwidth, latency)
    large_s = ring_time("all_reduce", large, members, bandwidth, latency)
    got_bw, got_latency = ring_link(members, small_s, large_s, large)
    # the small message's bytes count as latency: a few parts in a million
    assert got_latency == pytest.approx(latency, rel=1e-2)
    assert got_bw == pytest.approx(bandwidth, rel=1e-3)


def test_p2p_link_from_round_trips():
    bandwidth, latency, large = 5e10, 9e-6, 256 << 20
    got_bw, got_latency = p2p_link(2 * latency, 2 * (latency + large / bandwidth), large)
    assert (got_bw, got_latency) == (pytest.approx(bandwidth), pytest.approx(latency))


def test_noise_never_makes_a_bandwidth_negative():
    # the large message measured faster than the small one's latency accounts for
    bw, _ = ring_link(4, small_s=1e-3, large_s=1e-3, large_bytes=16 << 20)
    assert bw == pytest.approx(1.5 * (16 << 20) / 1e-3)  # all of the time counts as bytes
    assert p2p_link(2e-3, 1e-3, 1 << 20)[0] > 0


def test_the_pairs_on_two_nodes_of_four_gpus():
    nodes = nodes_of(8, 4)
    assert nodes == [0, 0, 0, 0, 1, 1, 1, 1]
    assert link_pairs(nodes) == ((0, 1), (0, 4))


@pytest.mark.parametrize("world, local, pairs", [
    (4, 4, ((0, 1), None)),  # one node
    (4, 1, (None, (0, 1))),  # a device per node: no link within one
    (1, 1, (None, None)),
    (16, 8, ((0, 1), (0, 8))),
])
def test_the_pairs_of_other_shapes(world, local, pairs):
    assert link_pairs(nodes_of(world, local)) == pairs


def test_ranks_that_do_not_fill_nodes_are_an_error():
    with pytest.raises(ValueError, match="6 ranks do not fill nodes of 4"):
        nodes_of(6, 4)


def test_nccl_only_with_a_gpu_per_local_rank():
    assert backend_for(True, 8, 8) == "nccl"
    assert backend_for(True, 1, 2) == "gloo"
    assert backend_for(False, 0, 4) == "gloo"


def test_cuda_sizes_saturate_the_device():
    cuda, cpu = probes.sizes_for("cuda"), probes.sizes_for("cpu")
    assert cuda.gemm >= 8192 and 2 * cuda.gemm ** 3 >= 1e12  # ~1 ms at 1 PFLOPS
    assert cuda.copy_bytes >= 1 << 30 and cuda.large_bytes >= 256 << 20  # beyond L2, NCCL's knee
    assert cpu.gemm < cuda.gemm and cpu.large_bytes < cuda.large_bytes


@pytest.mark.parametrize("value, kind, text", [
    (989.24e12, "flops", "989.2 TFLOPS"), (3.2e10, "flops", "32.00 GFLOPS"),
    (4.8e12, "bandwidth", "4.800 TB/s"), (2.5e8, "bandwidth", "250.0 MB/s"),
    (9e-7, "time", "900.0 ns"), (1.2e-4, "time", "120.0 us"), (3.5e8, "bytes", "0.3500 GB"),
])
def test_quantities_take_the_largest_unit_they_fill(value, kind, text):
    assert quantity_text(value, kind) == text


def _one_thread_best(fn) -> float:
    """The fastest of five runs on one thread (as each calibrating process runs), timed here
    and not by calibrate's code."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best


def _matmul_flops(size: int = 512) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size ** 3 / _one_thread_best(lambda: torch.mm(a, b))


def _copy_bandwidth(nbytes: int = 16 << 20) -> float:
    src = torch.randn(nbytes // 4)
    dst = torch.empty_like(src)
    return 2 * nbytes / _one_thread_best(lambda: dst.copy_(src))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_probes_measure_the_device():
    device, sizes = torch.device("cuda"), probes.sizes_for("cuda")
    f32 = 2 * sizes.gemm ** 3 / probes.gemm_seconds(device, torch.float32, sizes)
    bf16 = 2 * sizes.gemm ** 3 / probes.gemm_seconds(device, torch.bfloat16, sizes)
    mem_bw = 2 * sizes.copy_bytes / probes.copy_seconds(device, sizes)
    launch = probes.launch_seconds(device, sizes) / sizes.launches
    assert 1e12 < f32 < bf16 < 3e15  # tensor cores in bf16, beyond any CPU
    assert 2e11 < mem_bw < 2e13
    assert 1e-7 < launch < 1e-4


@pytest.mark.slow
def test_two_processes_calibrate_this_machine(tmp_path, capsys):
    """A real calibration: its block plans gpt_tiny, and its figures agree with what this
    test measures itself (three times apart at most: other jobs share the machine)."""
    out = tmp_path / "calibrated.par"
    assert main(["calibrate", "--devices", "2", "-o", str(out)]) == 0
    hw = check_text(out.read_text(), str(out)).hardware["calibrated"]
    (tmp_path / "spec.par").write_text(spec_on("calibrated.par", "pp = 2"))
    assert main(["check", str(tmp_path / "spec.par")]) == 0
    assert make_plan(check_file(tmp_path / "spec.par")).predicted_step_s > 0
    assert (hw.device, hw.devices, hw.devices_per_node) == ("cpu", 2, 2)
    flops, mem_bw = _matmul_flops(), _copy_bandwidth()
    print(f"calibrated flops_f32 {hw.flops_f32:.3g} (here {flops:.3g}), mem_bw "
          f"{hw.mem_bw:.3g} B/s (here {mem_bw:.3g}); intra_bw {hw.intra_bw:.3g} B/s, "
          f"intra_latency {hw.intra_latency:.3g} s, op_overhead {hw.op_overhead:.3g} s")
    assert flops / 3 < hw.flops_f32 < flops * 3  # measured: 0.8 to 1.5 times
    assert mem_bw / 3 < hw.mem_bw < mem_bw * 3  # measured: 0.9 to 1.4 times
    assert hw.flops_bf16 > 0
    assert hw.intra_bw > 1e6 and 0 < hw.intra_latency < 1e-2  # gloo: ~1 GB/s, ~0.1 ms
    assert 1e-8 < hw.op_overhead < 1e-3
