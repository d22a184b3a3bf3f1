"""Gradient synchronisation, once per step: the all-reduce of every parameter gradient the
plan syncs per step (data parallelism; STEP_SYNC in each stage), packed into buckets of about
SYNC_BUCKET_BYTES, and the sum over the copies of a parameter kept on several stages (a tied
embedding on the first and the last).

The all-reduces overlap the last backward passes, as DDP's and Megatron's
--overlap-grad-reduce do: during a stage's last backward on this rank (its last B, or W when
the backward is split) each bucket is launched as soon as every gradient in it has arrived,
and the rest right after that pass; the step waits for them before the optimizer. Every
member of a group packs the same buckets and launches them in the same order (the same stages
run the same passes), as NCCL requires. A parameter synced over several axes is summed over
its first axis that way and over the others after the backward, one axis at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..ops.comm import SYNC_BUCKET_BYTES
from .gathered import finish_all


@dataclass(kw_only=True)
class Bucket:
    stage: int
    group: object
    params: list[torch.nn.Parameter]
    flat: torch.Tensor | None = None
    work: object = None
    seen: set[int] = field(default_factory=set)  # ids of the parameters whose gradient is in

    def launch(self) -> None:
        if self.work is not None:
            return
        for p in self.params:
            if p.grad is None:  # every member of the group packs the same buckets
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.params]
        self.flat = grads[0] if len(grads) == 1 else torch.cat([g.reshape(-1) for g in grads])
        self.work = dist.all_reduce(self.flat, group=self.group, async_op=True)

    def finish(self) -> None:
        self.launch()
        self.work.wait()
        if len(self.params) > 1:
            offset = 0
            for p in self.params:
                p.grad.copy_(self.flat[offset:offset + p.numel()].view_as(p.grad))
                offset += p.numel()
        self.flat = self.work = None
        self.seen.clear()


def pack(params: list[torch.nn.Parameter], stage: int, group) -> list[Bucket]:
    """Buckets of about SYNC_BUCKET_BYTES in the order given, one dtype each."""
    buckets: list[Bucket] = []
    size = SYNC_BUCKET_BYTES
    for p in params:
        nbytes = p.numel() * p.element_size()
        if size + nbytes > SYNC_BUCKET_BYTES or p.dtype != buckets[-1].params[0].dtype:
            buckets.append(Bucket(stage=stage, group=group, params=[]))
            size = 0
        buckets[-1].params.append(p)
        size += nbytes
    return buckets


class GradientSync:
    def __init__(self, program, last_pass: dict[int, tuple]):
        """`last_pass`: stage -> the action of this rank after which no gradient of the stage
        changes in a step."""
        self.program = program
        self.last_pass = {action: stage for stage, action in last_pass.items()}
        self.overlapped: list[Bucket] = []  # each parameter's first axis
        self.later: list[tuple[str, list[Bucket]]] = []  # (axis, buckets) after the backward
        self.armed: set[int] = set()  # stages in their last backward pass
        mesh = program.mesh
        firsts: dict[str, list] = {}  # axis -> [(stage, param)] for parameters' first axis
        rest: dict[str, list] = {}
        for stage, module in sorted(program.modules.items()):
            seen: set[int] = set()
            # a gathered parameter's gradient is whole only once its shards are reduced
            # after the backward (gathered.py): its other axes wait for that
            gathered = {attr for attr, _, _ in getattr(module, "GATHERED", ())}
            for name, axis in module.STEP_SYNC:
                if mesh is None or mesh.groups.get(axis) is None:
                    continue  # the reference, or an axis of one device
                param = module.get_parameter(name)
                into = rest if id(param) in seen or name in gathered else firsts
                seen.add(id(param))
                into.setdefault(axis, []).append((stage, param))
        for axis in sorted(firsts):
            for stage in sorted({s for s, _ in firsts[axis]}):
                # backward produces the last parameters' gradients first
                params = [p for s, p in reversed(firsts[axis]) if s == stage]
                self.overlapped += pack(params, stage, mesh.groups[axis])
        for axis in sorted(rest):
            self.later.append((axis, pack([p for _, p in rest[axis]], -1, mesh.groups[axis])))
        self.bucket_of: dict[int, Bucket] = {}
        for bucket in self.overlapped:
            for p in bucket.params:
                self.bucket_of[id(p)] = bucket
                p.register_post_accumulate_grad_hook(self._arrived)

    def _arrived(self, param: torch.nn.Parameter) -> None:
        bucket = self.bucket_of[id(param)]
        if bucket.stage not in self.armed or bucket.work is not None:
            return
        bucket.seen.add(id(param))
        if len(bucket.seen) == len(bucket.params):
            bucket.launch()

    def before(self, action: tuple) -> None:
        if action in self.last_pass:
            self.armed.add(self.last_pass[action])

    def after(self, action: tuple) -> None:
        stage = self.last_pass.get(action)
        if stage is None:
            return
        self.armed.discard(stage)
        for bucket in self.overlapped:  # in bucket order: the same on every member
            if bucket.stage == stage:
                bucket.launch()

    def finish(self) -> None:
        """Reduce the gathered parameters' gradients into their shards, wait for every
        all-reduce, then the later axes, then the copies of parameters."""
        finish_all(self.program.modules)
        for bucket in self.overlapped:  # stages this step did not visit launch here
            bucket.launch()
        for bucket in self.overlapped:
            bucket.finish()
        for _, buckets in self.later:
            for bucket in buckets:
                bucket.launch()
            for bucket in buckets:
                bucket.finish()
        sum_copies(self.program)


def sum_copies(program) -> None:
    """A parameter kept on several stages gets the sum of its copies' gradients on each."""
    mesh = program.mesh
    shared = program.spec["shared_params"]
    if not shared:
        return
    stages_of: dict[str, list[int]] = {}
    for stage in program.spec["stages"]:
        for p in stage["params"]:
            if p["name"] in shared:
                stages_of.setdefault(p["name"], []).append(stage["index"])
    for name in shared:
        copies = []
        for s in stages_of[name]:
            module = program.modules.get(s)
            if module is not None:
                attr = next(p["attr"] for p in program.spec["stages"][s]["params"]
                            if p["name"] == name)
                copies.append(module.get_parameter(attr))
        ranks = sorted({program.spec["stages"][s]["rank"] for s in stages_of[name]})
        group = copy_group(program, tuple(ranks)) if (
            mesh is not None and len(ranks) > 1) else None  # every rank makes the groups
        if not copies:
            continue
        local = sum(p.grad if p.grad is not None else torch.zeros_like(p) for p in copies)
        if group is not None:
            dist.all_reduce(local, group=group)
        for p in copies:
            p.grad = local.clone()


def copy_group(program, pp_ranks: tuple[int, ...]):
    """The process group joining the pipeline ranks that hold copies of a parameter (made by
    every rank in the same order, once)."""
    mesh = program.mesh
    if pp_ranks not in mesh.copy_groups:
        others = [(a, n) for a, n in mesh.axes if a != "pp"]
        count = 1
        for _, n in others:
            count *= n
        mine = None
        for flat in range(count):
            coords, rest = {}, flat
            for axis, size in reversed(others):
                coords[axis] = rest % size
                rest //= size
            members = [mesh.rank_at(**coords, pp=p) for p in pp_ranks]
            group = dist.new_group(members)
            if mesh.rank in members:
                mine = group
        mesh.copy_groups[pp_ranks] = mine
    return mesh.copy_groups[pp_ranks]
