"""The bytes of tensors alive in this process, and their peak: what a GPU's allocator reports
(`torch.cuda.max_memory_allocated`), measured on any device.

Inside the context every tensor an op makes is counted until its storage is freed (a storage
shared by views counts once); tensors made before it (parameters, the optimizer's state) are
counted when handed to `hold`. The resident size of a CPU process says nothing this precise:
it includes the interpreter and torch's libraries, and freed memory is rarely returned.
"""

from __future__ import annotations

import contextlib
import os
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage address -> bytes
        self.now = 0
        self.peak = 0

    def hold(self, tensors) -> None:
        """Count tensors that exist already (each storage once)."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                self._count(t)

    def _count(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        address, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or address in self.live:
            return
        self.live[address] = size
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._freed, address)

    def _freed(self, address: int) -> None:
        self.now -= self.live.pop(address, 0)

    def reset_peak(self) -> None:
        self.peak = self.now

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self._count(t)
        return out


ACTIVE: list[LiveBytes] = []  # the tracker of the running steps, if any


def tracking(device: torch.device, held) -> contextlib.AbstractContextManager:
    """With PARC_LIVE_BYTES=1 on a CPU run, count live tensors from here on (the parameters
    `held` and everything made after); the step's peak memory is then theirs."""
    if os.environ.get("PARC_LIVE_BYTES") != "1" or device.type != "cpu":
        return contextlib.nullcontext()
    return _Tracking(list(held))


class _Tracking:
    def __init__(self, held: list) -> None:
        self.tracker = LiveBytes()
        self.held = held

    def __enter__(self) -> LiveBytes:
        self.tracker.__enter__()
        self.tracker.hold(self.held)
        ACTIVE.append(self.tracker)
        return self.tracker

    def __exit__(self, *exc) -> None:
        ACTIVE.remove(self.tracker)
        self.tracker.__exit__(*exc)
