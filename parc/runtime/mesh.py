"""The device mesh of a generated program: one process group per mesh axis."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh


def step_timeout() -> timedelta:
    """How long any collective may wait once training runs (PARC_TIMEOUT_S, 60 s)."""
    return timedelta(seconds=float(os.environ.get("PARC_TIMEOUT_S", "60")))


def first_step_timeout(backend: str) -> timedelta:
    """The first step compiles kernels (Triton on a GPU can take minutes), so its collectives
    may wait longer: PARC_FIRST_STEP_TIMEOUT_S, by default 10 minutes with NCCL and the step
    timeout on CPU."""
    default = max(step_timeout().total_seconds(), 600.0 if backend == "nccl" else 0.0)
    return timedelta(seconds=float(os.environ.get("PARC_FIRST_STEP_TIMEOUT_S", default)))


def init_distributed(backend: str | None = None) -> None:
    """Join the torchrun job (gloo on CPU, NCCL on CUDA), with a timeout so no rank hangs."""
    if dist.is_initialized():
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=first_step_timeout(backend))


def steady_timeouts(groups) -> None:
    """After the first step: every group's collectives wait the step timeout at most."""
    from torch.distributed.distributed_c10d import _set_pg_timeout

    timeout = step_timeout()
    for group in [None, *groups]:  # None: the world
        if group is not None or dist.is_initialized():
            _set_pg_timeout(timeout, group)


@dataclass
class Mesh:
    axes: tuple[tuple[str, int], ...]  # (name, size), outer to inner
    coords: dict[str, int]  # this rank's position on each axis
    groups: dict[str, object]  # axis -> process group (None when the axis has one device)
    rank: int
    device: torch.device
    device_mesh: object = None  # torch's DeviceMesh over the same axes
    # pipeline ranks -> the group joining the copies of a parameter kept on their stages
    # (sync.copy_group); kept on the mesh, so a later mesh in the same process makes its own
    copy_groups: dict[tuple[int, ...], object] = field(default_factory=dict)

    def size(self, axis: str) -> int:
        return dict(self.axes).get(axis, 1)

    def rank_at(self, **coords: int) -> int:
        """The global rank at this rank's position with some coordinates changed."""
        where = {**self.coords, **coords}
        rank = 0
        for name, size in self.axes:
            rank = rank * size + where[name]
        return rank

    def peers(self, axis: str, positions: list[int]) -> list[int]:
        return [self.rank_at(**{axis: p}) for p in positions]


def coordinates(axes, rank: int) -> dict[str, int]:
    coords = {}
    for name, size in reversed(axes):
        coords[name] = rank % size
        rank //= size
    return coords


def build_mesh(axes: tuple[tuple[str, int], ...]) -> Mesh:
    """torch's DeviceMesh over the spec's axes, and its process group for each axis."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    total = 1
    for _, size in axes:
        total *= size
    assert total == world, f"the mesh has {total} devices but the job has {world} processes"
    device = torch.device("cuda", torch.cuda.current_device()) if (
        dist.is_initialized() and dist.get_backend() == "nccl") else torch.device("cpu")
    coords = coordinates(axes, rank)
    groups: dict[str, object] = {name: None for name, _ in axes}
    device_mesh = None
    if world > 1:
        device_mesh = init_device_mesh(device.type, tuple(size for _, size in axes),
                                       mesh_dim_names=tuple(name for name, _ in axes))
        for name, size in axes:
            if size > 1:
                groups[name] = device_mesh.get_group(name)
    return Mesh(tuple(axes), coords, groups, rank, device, device_mesh)
