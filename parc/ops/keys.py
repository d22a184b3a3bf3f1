"""The dropout key of an op: a hash of where it is in the model, so the reference and every
parallel plan draw the same mask, and a module class shared by a def's calls computes each
call's keys from its scope (compiler/codegen/calls.py)."""

from __future__ import annotations

import zlib


def dropout_key(scope: str, ordinal: int) -> int:
    """The key of the `ordinal`-th dropout (in program order) of the ops with this scope."""
    return zlib.crc32(f"{scope}:{ordinal}".encode())


def dropout_keys(scope: str, places: tuple[tuple[str, int], ...]) -> tuple[int, ...]:
    """A call's keys: each (scope below the call, ordinal), the call's scope put before it."""
    return tuple(dropout_key(scope + below, ordinal) for below, ordinal in places)
