"""Runs one rank's share of a schedule: F, B and W actions with the p2p they imply.

Shapes are known from the plan, so receive buffers are allocated once and no shape handshake
is needed. Receives block just before the action that needs them; sends are asynchronous and
awaited at the end of the step, which is deadlock-free because the compiler validated the
schedule under exactly these semantics.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from .data import local_slice
from .split_backward import Split, backward_input, backward_weight

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
          "f64": torch.float64, "i64": torch.int64, "i32": torch.int32}


@dataclass
class Pending:
    """What a forward leaves for its backward."""

    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    grads: list[torch.Tensor] | None = None  # output gradients, kept for W when B is split
    split: Split | None = None  # what B captured for a W of the weight branches only


@dataclass
class StepResult:
    losses: list[torch.Tensor] = field(default_factory=list)
    # (op, stage, microbatch, start, end) in seconds from the step's start, when traced
    events: list[tuple] = field(default_factory=list)


def message_tag(kind: str, src_stage: int, dst_stage: int, mb: int, index: int) -> int:
    """The same tag on both ends of a message (NCCL ignores it; gloo matches on it)."""
    return zlib.crc32(f"{kind}:{src_stage}:{dst_stage}:{mb}:{index}".encode()) & 0x7FFFFFF


class Executor:
    def __init__(self, program: dict, modules: dict, mesh, device):
        self.program = program
        self.modules = modules  # stage index -> module on this rank
        self.mesh = mesh
        self.device = device
        sched = program["schedule"]
        self.stage_rank = sched["stage_rank"]
        self.paths = sched["paths"]
        self.split = sched["split_backward"]
        self.stages = {s["index"]: s for s in program["stages"]}
        self.num_microbatches = program["train"]["microbatches"]
        self.pp = self.mesh.coords.get("pp", 0) if self.mesh is not None else 0
        if self.mesh is not None:
            self.actions = [tuple(a) for a in sched["ranks"][self.pp]]
        else:  # one process runs every stage: each microbatch down its path and back
            self.actions = []
            for mb, path in enumerate(self.paths):
                self.actions += [("F", s, mb) for s in path]
                for s in reversed(path):
                    self.actions += [("B", s, mb)] + ([("W", s, mb)] if self.split else [])
        self.buffers: dict[tuple, list[torch.Tensor]] = {}
        # `recompute all`: keep only each stage's inputs and run its forward again in backward
        self.recompute = "all" in program.get("recompute", [])
        # W of a split backward runs only the weight branches, from gradients B captured;
        # under recomputation each of its small passes would recompute the forward again, so
        # there W is one backward into the parameters
        self.weight_pass = not [r for r in program.get("recompute", []) if r != "none"]
        # `precision bf16`: bf16 compute under autocast; parameters, optimizer state and the
        # tensors sent between stages stay f32
        self.bf16 = program["train"].get("precision") == "bf16"

    # ---- neighbours
    def _next(self, stage: int, mb: int) -> int | None:
        path = self.paths[mb]
        i = path.index(stage)
        return path[i + 1] if i + 1 < len(path) else None

    def _prev(self, stage: int, mb: int) -> int | None:
        path = self.paths[mb]
        i = path.index(stage)
        return path[i - 1] if i > 0 else None

    def _peer(self, stage: int) -> int | None:
        """The global rank running `stage` at this rank's data/tensor position (None: here)."""
        pp = self.stage_rank[stage]
        if self.mesh is None or pp == self.pp:
            return None
        return self.mesh.rank_at(pp=pp)

    # ---- p2p
    def _buffers(self, key: tuple, specs: list[dict]) -> list[torch.Tensor]:
        """Receive buffers, one set per message, allocated on first use and reused by every
        later step (a step's tensors are dead by the next one)."""
        if key not in self.buffers:
            self.buffers[key] = [torch.empty(s["shape"], dtype=DTYPES[s["dtype"]],
                                             device=self.device) for s in specs]
        for buf in self.buffers[key]:
            buf.grad = None
        return self.buffers[key]

    def _needs(self, action: tuple) -> tuple | None:
        """The message an action receives from another rank: (kind, src, dst, mb, specs)."""
        op, stage, mb = action
        if op == "F":
            prev = self._prev(stage, mb)
            if prev is not None and self._peer(prev) is not None:
                return ("act", prev, stage, mb, self.stages[stage]["live_in"])
        elif op == "B":
            nxt = self._next(stage, mb)
            if nxt is not None and self._peer(nxt) is not None:
                return ("grad", nxt, stage, mb, self.stages[stage]["live_out"])
        return None

    def _post_recv(self, message: tuple, posted: dict) -> None:
        kind, src, dst, mb, specs = message
        if message[:4] in posted:
            return
        bufs = self._buffers(message[:4], specs)
        peer = self._peer(src)
        ops = [dist.P2POp(dist.irecv, buf, peer, tag=message_tag(kind, src, dst, mb, i))
               for i, buf in enumerate(bufs)]
        posted[message[:4]] = (bufs, dist.batch_isend_irecv(ops) if ops else [])

    def _recv_ahead(self, message: tuple, posted: dict) -> None:
        """Wait for a message now, so that the action's timing starts when its input is here."""
        self._post_recv(message, posted)
        for work in posted[message[:4]][1]:
            work.wait()
        posted[message[:4]] = (posted[message[:4]][0], [])

    def _recv(self, message: tuple, posted: dict) -> list[torch.Tensor]:
        self._post_recv(message, posted)
        bufs, works = posted.pop(message[:4])
        for work in works:
            work.wait()
        return bufs

    def _send(self, kind: str, src_stage: int, dst_stage: int, mb: int,
              tensors: list[torch.Tensor], works: list) -> None:
        peer = self._peer(dst_stage)
        assert peer is not None
        ops = [dist.P2POp(dist.isend, t.detach().contiguous(), peer,
                          tag=message_tag(kind, src_stage, dst_stage, mb, i))
               for i, t in enumerate(tensors)]
        if ops:
            works.extend(dist.batch_isend_irecv(ops))

    def _forward(self, module, args: list) -> list[torch.Tensor]:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.recompute and torch.is_grad_enabled():
                outputs = checkpoint(module, *args, use_reentrant=False)
            else:
                outputs = module(*args)
        return [t.float() if t.is_floating_point() else t for t in outputs]

    # ---- the step
    def run(self, batch: dict[str, torch.Tensor], data_splits: dict,
            trace: bool = False) -> StepResult:
        result = StepResult()
        origin = time.perf_counter()
        pending: dict[tuple[int, int], Pending] = {}
        local: dict[tuple, list[torch.Tensor]] = {}  # messages between stages on this rank
        works: list = []
        posted: dict = {}  # receives posted ahead: their transfer overlaps the current action
        m = self.num_microbatches
        for index, (op, stage, mb) in enumerate(self.actions):
            module = self.modules[stage]
            if index + 1 < len(self.actions):
                ahead = self._needs(self.actions[index + 1])
                if ahead is not None:
                    self._post_recv(ahead, posted)
            message = self._needs((op, stage, mb))
            info = self.stages[stage]
            if trace and message is not None:  # time the compute, not the wait for input
                self._recv_ahead(message, posted)
            began = time.perf_counter()
            if op == "F":
                prev = self._prev(stage, mb)
                if prev is None:
                    inputs = []
                elif message is None:
                    inputs = [t.detach() for t in local.pop(("act", prev, stage, mb))]
                else:
                    inputs = self._recv(message, posted)
                inputs = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
                data = [local_slice(batch[name], mb, m, data_splits[name]).to(self.device)
                        for name in info["data_inputs"]]
                outputs = self._forward(module, inputs + data)
                pending[(stage, mb)] = Pending(inputs, outputs)
                nxt = self._next(stage, mb)
                if nxt is None:
                    result.losses.append(outputs[-1].detach())
                elif self._peer(nxt) is None:
                    local[("act", stage, nxt, mb)] = outputs
                else:
                    self._send("act", stage, nxt, mb, outputs, works)
            elif op == "B":
                state = pending[(stage, mb)]
                nxt = self._next(stage, mb)
                if nxt is None:
                    outs = [state.outputs[-1]]
                    grads = [torch.full_like(state.outputs[-1], 1.0 / m)]
                elif message is None:
                    outs, grads = state.outputs, local.pop(("grad", nxt, stage, mb))
                else:
                    outs = state.outputs
                    grads = self._recv(message, posted)
                wanted = [t for t in state.inputs if t.requires_grad]
                if self.split and self.weight_pass:
                    params = [p for p in module.parameters() if p.requires_grad]
                    input_grads, state.split = backward_input(outs, grads, wanted, params)
                elif self.split:
                    input_grads = torch.autograd.grad(outs, wanted, grads, retain_graph=True,
                                                      allow_unused=True) if wanted else []
                    state.grads = grads
                else:
                    torch.autograd.backward(outs, grads)
                    input_grads = [t.grad for t in wanted]
                    del pending[(stage, mb)]
                prev = self._prev(stage, mb)
                if prev is not None:
                    input_grads = [g if g is not None else torch.zeros_like(t)
                                   for g, t in zip(input_grads, wanted)]
                    if self._peer(prev) is None:
                        local[("grad", stage, prev, mb)] = input_grads
                    else:
                        self._send("grad", stage, prev, mb, input_grads, works)
            else:  # W: the weight gradients of a split backward
                state = pending.pop((stage, mb))
                if state.split is not None:
                    backward_weight(state.split)
                else:
                    params = [p for p in module.parameters() if p.requires_grad]
                    outs = [state.outputs[-1]] if self._next(stage, mb) is None \
                        else state.outputs
                    torch.autograd.backward(outs, state.grads, inputs=params)
                del state  # the microbatch's graph goes now, before the next forward
            if trace:
                result.events.append((op, stage, mb, began - origin,
                                      time.perf_counter() - origin))
        for work in works:
            work.wait()
        return result
