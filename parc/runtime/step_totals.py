"""What a step reports, reduced in one collective after the gradient sync: the loss, the
gradient norm (and clipping by it), and every rank's peak memory.

The loss is the mean over microbatches, summed over the axes it is a partial sum on (as the
plan's SBP says) and taken once over the axes it is whole on. The gradient norm counts every
element of every parameter once, whether a shard is replicated over an axis or a parameter is
kept on several stages (a tied embedding on the first and the last). Each rank puts its peak
memory in its own slot, so the sum carries all of them. All on the compute device; the host
reads the figures once per step.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import live_bytes


@dataclass(kw_only=True)
class StepTotals:
    loss: float
    grad_norm: float
    peak_bytes: list[int]  # per rank


def _counted_grads(program) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(gradients counted in the norm once each, every gradient on this rank)."""
    home = {}  # parameter -> the first stage that keeps it
    for stage in program.spec["stages"]:
        for p in stage["params"]:
            home.setdefault(p["name"], stage["index"])
    counted, grads = [], []
    for stage in program.spec["stages"]:
        module = program.modules.get(stage["index"])
        if module is None:
            continue
        for p in stage["params"]:
            param = module.get_parameter(p["attr"])
            if param.grad is None:
                continue
            grads.append(param.grad)
            if home[p["name"]] != stage["index"]:
                continue
            if program.mesh is not None:
                split_axes = {a for a, _ in p["splits"]}
                if any(program.mesh.coords[a] != 0 for a, _ in program.mesh.axes
                       if a != "pp" and a not in split_axes):
                    continue
            counted.append(param.grad)
    return counted, grads


def peak_memory(device: torch.device) -> int:
    """This process's peak memory: allocated on a GPU, resident on the CPU (or, with
    PARC_LIVE_BYTES=1, the peak of its live tensors: live_bytes.py)."""
    if live_bytes.ACTIVE:
        return live_bytes.ACTIVE[-1].peak
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KB here


def reduce_step(program, losses: list[torch.Tensor], clip: float | None) -> StepTotals:
    """The step's figures; with `clip`, gradients are scaled to that global norm at most."""
    mesh = program.mesh
    world = dist.get_world_size() if mesh is not None else 1
    rank = mesh.rank if mesh is not None else 0
    totals = torch.zeros(2 + world, dtype=torch.float64, device=program.device)
    local = torch.stack(losses).sum() / program.spec["train"]["microbatches"] if losses \
        else None
    partial = set(program.spec.get("loss_partial", []))
    owner = local is not None and (mesh is None or all(
        mesh.coords[a] == 0 for a, _ in mesh.axes if a != "pp" and a not in partial))
    if owner:
        totals[0] += local.detach().to(torch.float64)
    counted, grads = _counted_grads(program)
    if counted:
        totals[1] += torch.stack(torch._foreach_norm(counted)).double().pow(2).sum()
    totals[2 + rank] = float(peak_memory(program.device))
    if mesh is not None:
        dist.all_reduce(totals)
    if clip is not None and grads:
        scale = (clip / (totals[1].sqrt() + 1e-6)).clamp(max=1.0).float()
        torch._foreach_mul_(grads, scale)
    figures = totals.tolist()  # the one host sync of the step
    return StepTotals(loss=figures[0], grad_norm=figures[1] ** 0.5,
                      peak_bytes=[int(b) for b in figures[2:]])


def reduce_loss(program, losses: list[torch.Tensor]) -> float:
    """The loss alone (an evaluation pass), reduced as `reduce_step` reduces it."""
    mesh = program.mesh
    total = torch.zeros((), dtype=torch.float64, device=program.device)
    partial = set(program.spec.get("loss_partial", []))
    if losses and (mesh is None or all(mesh.coords[a] == 0 for a, _ in mesh.axes
                                       if a != "pp" and a not in partial)):
        total += (torch.stack(losses).sum() / program.spec["train"]["microbatches"]).to(
            torch.float64)
    if mesh is not None:
        dist.all_reduce(total)
    return float(total)
