"""Launch settings shared by the row kernels (library and generated)."""

from __future__ import annotations


def row_warps(block: int) -> int:
    """Warps for one program over a row of `block` elements: a warp per 256 elements, 1 to 8,
    so wide rows (LLaMA's 4096 and up) are not squeezed through the default four."""
    return min(max(block // 256, 1), 8)
