"""Parameters kept as shards and gathered where they are used (ZeRO-3, as FSDP runs it).

A parameter split over an axis (`S(0)@dp` on a weight) is gathered whole just before the op
that reads it, and the whole tensor is freed right after: autograd keeps only a handle to it
(a saved-tensor hook), and the backward gathers it again when it needs it. The next
parameter's gather is launched while the current one is in use (prefetch): in the forward the
one read after it, in the backward the one read before it. The gradient of the
whole tensor is summed over the step's microbatches on this rank, and reduce-scattered into
the shard's `.grad` once per step, before the optimizer (`Gathers.finish`).

Every member of a group gathers the same parameters in the same order (the same stages run the
same passes and autograd visits one graph in one order), as NCCL requires. The generated stage
lists its gathered parameters in `GATHERED` (attribute, [(axis, dim, whole gradient)], dtype),
in the order its forward reads them, and calls `self.gathers.use(i)`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .collectives import _gather_into, _rank, _scatter_sum, _size

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


@dataclass(kw_only=True)
class Gathered:
    """One parameter's gather: over each (group, dim) in turn, innermost axis first."""

    module: torch.nn.Module
    attr: str
    steps: tuple[tuple[object, int, bool], ...]  # (group, dim, whole gradient)
    dtype: torch.dtype | None  # cast the shard before gathering (bf16 for a bf16 matmul)
    accum: torch.Tensor | None = None  # the whole gradient, summed over this step's passes
    pending: tuple | None = None  # a prefetched gather: (work, whole tensor, dim)
    before: Gathered | None = None  # the one the forward gathers before it: the backward's next

    @property
    def param(self) -> torch.nn.Parameter:
        return self.module.get_parameter(self.attr)

    def launch(self) -> None:
        """Start gathering (the first axis asynchronously; the prefetch)."""
        if self.pending is not None:
            return
        x = self.param.detach()
        x = x.to(self.dtype) if self.dtype is not None else x
        group, dim, _ = self.steps[0]
        moved = x.movedim(dim, 0).contiguous()
        out = moved.new_empty((_size(group) * moved.shape[0],) + tuple(moved.shape[1:]))
        work = _gather_into(out, moved, group=group, async_op=True)
        self.pending = (work, out, dim)

    def whole(self) -> torch.Tensor:
        """The whole parameter (waiting for the prefetch, if one was launched)."""
        self.launch()
        work, out, dim = self.pending
        self.pending = None
        work.wait()
        x = out.movedim(0, dim).contiguous() if dim else out
        for group, dim, _ in self.steps[1:]:
            moved = x.movedim(dim, 0).contiguous()
            out = moved.new_empty((_size(group) * moved.shape[0],) + tuple(moved.shape[1:]))
            _gather_into(out, moved, group=group)
            x = out.movedim(0, dim).contiguous() if dim else out
        return x

    def add_grad(self, grad: torch.Tensor) -> None:
        grad = grad.to(self.param.dtype)
        if self.accum is None:
            self.accum = grad.clone()
        else:
            self.accum += grad

    def reduce(self) -> torch.Tensor:
        """The step's gradient of this rank's shard: the whole gradient summed over the ranks,
        this rank's slice of it (a reduce-scatter per axis, outermost first); zeros for a
        stage this step did not visit, so every member runs the same collectives."""
        g = self.accum
        self.accum = None
        if g is None:
            shape = list(self.param.shape)
            for group, dim, _ in self.steps:
                shape[dim] *= _size(group)
            g = self.param.new_zeros(shape)
        for group, dim, whole in reversed(self.steps):
            g = g.chunk(_size(group), dim=dim)[_rank(group)].contiguous() if whole \
                else _scatter_sum(g, group, dim)
        return g


class _Use(torch.autograd.Function):
    """The whole parameter in the forward; its gradient goes to the step's sum."""

    @staticmethod
    def forward(ctx, shard, gathered):
        ctx.gathered = gathered
        full = gathered.whole()
        full._parc_gathered = gathered  # the saved-tensor hook keeps a handle, not the tensor
        return full

    @staticmethod
    def backward(ctx, grad):
        ctx.gathered.add_grad(grad)
        return None, None


class Gathers:
    """A stage module's gathered parameters, in the order its forward reads them."""

    def __init__(self, module: torch.nn.Module, listing: tuple, groups: dict):
        self.items: list[Gathered] = []
        self.plain: list[str | None] = []  # an attribute read as is (every axis of size one)
        for attr, steps, dtype in listing:
            real = tuple((groups[axis], dim, whole) for axis, dim, whole in steps
                         if groups.get(axis) is not None)
            self.plain.append(None if real else attr)
            self.items.append(Gathered(module=module, attr=attr, steps=real,
                                       dtype=DTYPES[dtype] if dtype else None))
        gathered = [item for item in self.items if item.steps]
        for earlier, item in zip(gathered, gathered[1:]):
            item.before = earlier

    def use(self, index: int) -> torch.Tensor:
        if self.plain[index] is not None:
            item = self.items[index]
            return item.param if item.dtype is None else item.param.to(item.dtype)
        for later in self.items[index + 1:]:  # prefetch the next one while this one is used
            if later.steps:
                later.launch()
                break
        item = self.items[index]
        return _Use.apply(item.param, item)

    def finish(self) -> None:
        """Once per step, after the last backward: every shard's gradient (one reduce-scatter
        per parameter and axis, in the listed order on every member), and no prefetch left
        over for the next step, whose parameters the optimizer is about to change."""
        for item in self.items:
            if item.pending is not None:
                item.pending[0].wait()
                item.pending = None
        for item in self.items:
            if item.steps:
                g = item.reduce()
                p = item.param
                p.grad = g if p.grad is None else p.grad + g


def _pack(t: torch.Tensor):
    base = t if t._base is None else t._base
    gathered = getattr(base, "_parc_gathered", None)
    if gathered is None:
        return t
    return (gathered, t.size(), t.stride(), t.storage_offset())


def _unpack(packed):
    if isinstance(packed, torch.Tensor):
        return packed
    gathered, size, stride, offset = packed
    full = gathered.whole()
    if gathered.before is not None:  # the backward runs the layers in reverse: prefetch
        gathered.before.launch()
    return full.as_strided(size, stride, offset)


def keep_handles(module: torch.nn.Module):
    """A context for a stage's forward: saved gathered parameters become handles."""
    if getattr(module, "gathers", None) is None:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)


def finish_all(modules: dict) -> None:
    for _, module in sorted(modules.items()):
        gathers = getattr(module, "gathers", None)
        if gathers is not None:
            gathers.finish()
