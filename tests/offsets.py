"""Which multiplications in a kernel's TTIR are 32-bit and depend on the program id.

A program id times a row stride (or a block size) is an element offset; once rows x row length
reaches 2^31 such a product overflows in i32 and the kernel reads or writes the wrong memory.
Compiling for a GPU target and reading the TTIR finds that without allocating 8 GB.
"""

from __future__ import annotations

import re

NAME = re.compile(r"%[A-Za-z0-9_$.]+")
DEFINED_INSIDE = re.compile(r"(%[A-Za-z0-9_$.]+) = ")  # a loop's induction variable, iter_args
NARROW = re.compile(r"\barith\.muli .* : (i32|tensor<[0-9x]+xi32>)$")


def narrow_products(ttir: str) -> list[str]:
    """The i32 `arith.muli` lines with an operand derived from `tt.get_program_id`."""
    lines = [re.sub(r"\bloc\(.*$", "", line).strip() for line in ttir.splitlines()]
    lines = [line for line in lines if line.startswith("%")]
    from_pid: set[str] = set()
    changed = True
    while changed:
        changed = False
        for line in lines:
            lhs, rhs = line.split(" = ", 1)
            defined = set(NAME.findall(lhs)) | set(DEFINED_INSIDE.findall(rhs))
            used = set(NAME.findall(rhs)) - defined
            if "tt.get_program_id" in rhs or used & from_pid:
                if not defined <= from_pid:
                    from_pid |= defined
                    changed = True
    return [line for line in lines if NARROW.search(line)
            and set(NAME.findall(line.split(" = ", 1)[1])) & from_pid]
