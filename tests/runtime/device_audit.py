"""An audit of the devices of every tensor handed to a collective or a point-to-point
operation, for CPU runs that must behave as GPU runs would.

On CPU every tensor is on the CPU, so "on the compute device" cannot be told apart from "on
the host". The audit tells them apart by origin: a tensor made by a factory without a device
(`torch.zeros(())`), or moved to the host (`.cpu()`), is host-made; on a GPU it would be on
the CPU while the program computes on CUDA, and NCCL rejects it. Tensors computed from
device tensors, or made with `device=` / `*_like`, are fine.
"""

from __future__ import annotations

import traceback
import weakref

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.tensor, torch.arange,
             torch.rand, torch.randn, torch.randint, torch.as_tensor, torch.scalar_tensor}
HOST_MOVES = {torch.Tensor.cpu, torch.Tensor.numpy}
COLLECTIVES = ["all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single",
               "reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_single", "all_to_all",
               "all_to_all_single", "broadcast"]


class DeviceAudit(TorchFunctionMode):
    """Records host-made tensors while active; `install()` checks every collective."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.host: dict[int, weakref.ref] = {}  # id -> the host-made tensor
        self.findings: list[str] = []
        self.checked = 0
        self._saved: dict[str, object] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        made_on_host = (func in FACTORIES and kwargs.get("device") is None) or \
            func in HOST_MOVES or (func is torch.Tensor.to and _to_host(args, kwargs))
        if made_on_host and isinstance(out, torch.Tensor):
            self.host[id(out)] = weakref.ref(out)
        return out

    def check(self, where: str, tensors) -> None:
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                continue
            self.checked += 1
            made = self.host.get(id(t))
            if t.device.type != self.device.type or (made is not None and made() is t):
                frame = next((f for f in reversed(traceback.extract_stack()[:-3])
                              if "/parc/" in f.filename), None)
                at = f"{frame.filename.split('/parc/')[-1]}:{frame.lineno}" if frame else "?"
                self.findings.append(f"{where} at {at}: a {tuple(t.shape)} {t.dtype} tensor "
                                     "made on the host")

    def install(self) -> None:
        for name in COLLECTIVES:
            real = getattr(dist, name)
            self._saved[name] = real

            def wrapped(*args, _real=real, _name=name, **kwargs):
                self.check(_name, _flatten(args) + _flatten(list(kwargs.values())))
                return _real(*args, **kwargs)
            setattr(dist, name, wrapped)
        real_batch = dist.batch_isend_irecv
        self._saved["batch_isend_irecv"] = real_batch

        def batch(ops):
            self.check("batch_isend_irecv", [op.tensor for op in ops])
            return real_batch(ops)
        dist.batch_isend_irecv = batch

    def uninstall(self) -> None:
        for name, real in self._saved.items():
            setattr(dist, name, real)


def _to_host(args, kwargs) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, str | torch.device) and torch.device(target).type == "cpu"


def _flatten(items) -> list:
    out = []
    for item in items:
        if isinstance(item, list | tuple):
            out += _flatten(item)
        else:
            out.append(item)
    return out
