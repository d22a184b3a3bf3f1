"""What passes may know beyond the graph: the hardware the plan runs on."""

from __future__ import annotations

from dataclasses import dataclass

from ...dsl.spec import HardwareSpec

# For graphs read from IR text with no spec: an accelerator-like balance of arithmetic to
# link bandwidth (about a thousand FLOPs per byte moved).
GENERIC_HARDWARE = HardwareSpec(
    name="generic", device="cuda", devices=1, devices_per_node=1, memory=80e9,
    flops_f32=1e14, flops_bf16=1e14, mem_bw=2e12, intra_bw=1e11, intra_latency=5e-6,
    inter_bw=None, inter_latency=None, efficiency=1.0)


@dataclass(frozen=True, kw_only=True)
class PassContext:
    hardware: HardwareSpec = GENERIC_HARDWARE
    precision: str = "f32"
    sequence_parallel: str | None = None  # the tensor-parallel axis that also splits the sequence
    context_parallel: str | None = None  # the axis that splits the sequence, ring attention
    auto_sbp: tuple[str, ...] = ()  # parameters whose layouts the sbp search chooses
