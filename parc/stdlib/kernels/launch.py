"""Launch settings shared by the row kernels (library and generated)."""

from __future__ import annotations

import functools

import torch
import triton

PARTIALS_PER_SM = 4
PARTIALS_OFF_GPU = 8  # the Triton interpreter: few enough that tests see blocks of rows


def row_warps(block: int) -> int:
    """Warps for one program over a row of `block` elements: a warp per 256 elements, 1 to 8,
    so wide rows (LLaMA's 4096 and up) are not squeezed through the default four."""
    return min(max(block // 256, 1), 8)


@functools.cache
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def partials(rows: int, device: torch.device) -> tuple[int, int]:
    """(programs, rows per program) of a norm backward. Each program sums dW (and dB) over its
    block of rows into one partial row, so the f32 temporary per weight is [programs, N] (four
    programs per SM), not [rows, N]; the caller sums the partials."""
    if device.type == "cuda":
        limit = PARTIALS_PER_SM * _sms(torch.cuda.current_device() if device.index is None
                                       else device.index)
    else:
        limit = PARTIALS_OFF_GPU
    per_program = max(1, triton.cdiv(rows, limit))
    return max(1, triton.cdiv(rows, per_program)), per_program
