"""Runs one rank's share of a schedule: F, B and W actions, and the p2p groups between them.

The compiler wrote each rank's steps into the program (plan.json `posting`): post a group of
sends and receives, or run an action. A group that receives is waited for at once (with every
group posted before it, in order, as one NCCL stream completes them); a group of sends alone is
left in flight while the rank computes, and waited for with the next group that receives or at
the end of the step (the sent tensors stay referenced until then). The executor follows the
steps as written; the compiler proved them deadlock-free and matched under NCCL's rules
(between two ranks operations match in the order they are posted, tags are ignored, a group
completes as one), so every message uses one tag, on gloo as on NCCL, and an order that would
hang or swap on GPUs hangs (until the timeout, reported with rank, step and action) or fails
here too. Shapes are known from the plan, so receive buffers are allocated once and no shape
handshake is needed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from . import functional
from .gathered import keep_handles
from .split_backward import Split, backward_input, backward_weight

TAG = 0  # NCCL ignores tags: messages match by order alone, here too


class P2PError(RuntimeError):
    """A group of sends and receives did not complete (a peer died, hung or diverged)."""


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
        stages = range(len(self.stage_rank))
        self.full_paths = [list(stages) for _ in range(self.num_microbatches)]
        if self.mesh is not None:  # ("post", [[op, kind, src, dst, mb], ...]) or ("run", action)
            self.steps = self._read(sched["posting"][self.pp])
            self.eval_steps = self._read(sched["eval_posting"][self.pp]) \
                if "eval_posting" in sched else []
        else:  # one process runs every stage: each microbatch down its path and back
            self.steps = []
            for mb, path in enumerate(self.paths):
                self.steps += [("run", ("F", s, mb)) for s in path]
                for s in reversed(path):
                    self.steps += [("run", ("B", s, mb))] + (
                        [("run", ("W", s, mb))] if self.split else [])
            self.eval_steps = [("run", ("F", s, mb)) for mb in range(self.num_microbatches)
                               for s in stages]
        self.buffers: dict[tuple, list[torch.Tensor]] = {}
        # `recompute all`: keep only each stage's inputs and run its forward again in backward
        self.recompute = "all" in program.get("recompute", [])
        # W of a split backward runs only the weight branches, from gradients B captured;
        # under recomputation each of its small passes would recompute the forward again, so
        # there W is one backward into the parameters
        self.weight_pass = not [r for r in program.get("recompute", []) if r != "none"]
        # `precision bf16`: bf16 compute under autocast; parameters and optimizer state stay
        # f32, the tensors sent between stages are bf16
        self.bf16 = program["train"].get("precision") == "bf16"
        self.at = -1  # the index in `steps` being run: what the heartbeat reports

    @staticmethod
    def _read(posting: list[dict]) -> list[tuple]:
        return [("run", tuple(st["run"])) if "run" in st else
                ("post", [tuple(p) for p in st["post"]]) for st in posting]

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

    def _post(self, index: int, group: list[tuple], outbox: dict, inbox: dict,
              in_flight: list) -> None:
        """Post one group (every tensor of every message, in the compiled order). A group
        with a receive is waited for now, after the groups still in flight; one of sends
        alone joins them (`in_flight`: (step index, group, works), in posting order)."""
        ops = []
        for op, kind, src, dst, mb in group:
            key = (kind, src, dst, mb)
            if op == "send":
                peer = self._peer(dst)
                ops += [dist.P2POp(dist.isend, t, peer, tag=TAG) for t in outbox.pop(key)]
            else:
                specs = self.stages[dst]["live_in" if kind == "act" else "live_out"]
                inbox[key] = self._buffers(key, specs)
                ops += [dist.P2POp(dist.irecv, b, self._peer(src), tag=TAG)
                        for b in inbox[key]]
        try:
            works = dist.batch_isend_irecv(ops) if ops else []
        except RuntimeError as exc:
            raise self._failed(index, group, exc) from exc
        in_flight.append((index, group, works))
        if any(op == "recv" for op, *_ in group):
            self._wait(in_flight)

    def _wait(self, in_flight: list) -> None:
        """Wait for every group in flight, in posting order."""
        while in_flight:
            index, group, works = in_flight[0]
            try:
                for work in works:
                    work.wait()
            except RuntimeError as exc:
                raise self._failed(index, group, exc) from exc
            in_flight.pop(0)

    def _failed(self, index: int, group: list[tuple], exc: Exception) -> P2PError:
        what = "; ".join(f"{op} {kind} of microbatch {mb} (stage {src}->{dst})"
                         for op, kind, src, dst, mb in group)
        after = next((a for k, a in self.steps[index:] if k == "run"), None)
        before = f"{after[0]}{after[1]}.{after[2]}" if after else "the end of the step"
        return P2PError(f"rank {self.mesh.rank} (pp {self.pp}) step {index}, before "
                        f"{before}: {what} did not complete: {exc}")

    def _forward(self, module, stage: int, args: list) -> list[torch.Tensor]:
        """The stage's outputs, each in the dtype the plan sends it in (the loss in f32)."""
        # entering autocast costs tens of microseconds even when disabled: only under bf16
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 \
            else contextlib.nullcontext()
        with autocast, keep_handles(module):
            if self.recompute and torch.is_grad_enabled():
                outputs = checkpoint(module, *args, use_reentrant=False)
            else:
                outputs = module(*args)
        sent = [DTYPES[spec["dtype"]] for spec in self.stages[stage]["live_out"]]
        return [t.to(dtype) if t.is_floating_point() else t
                for t, dtype in zip(outputs, sent + [torch.float32] * (len(outputs) - len(sent)))]

    def evaluate(self, data, batch_index: int, data_splits: dict,
                 paths: list[list[int]] | None = None) -> list[torch.Tensor]:
        """The losses of one batch through every stage, forward only, no dropout: the eval
        posting order (plan.json `eval_posting`), full paths even under a skip schedule.
        `paths` (one process only): each microbatch's stages instead, for an eval of the
        model with stages omitted (`parc eval --skip`)."""
        train_paths, train_steps = self.paths, self.steps
        if paths is None:
            self.paths, self.steps = self.full_paths, self.eval_steps
        else:
            assert self.mesh is None, "a mesh's eval posting is compiled for full paths"
            assert len(paths) == self.num_microbatches
            self.paths = [list(path) for path in paths]
            self.steps = [("run", ("F", s, mb)) for mb, path in enumerate(paths) for s in path]
        try:
            with torch.no_grad():
                return self.run(data, batch_index, data_splits, training=False).losses
        finally:
            self.paths, self.steps = train_paths, train_steps

    def last_passes(self) -> dict[int, tuple]:
        """Stage -> the last action of a step that changes its gradients on this rank."""
        out = {}
        for kind, what in self.steps:
            if kind == "run" and what[0] in ("B", "W"):
                out[what[1]] = what
        return out

    def count_targets(self, data, step: int, data_splits: dict) -> None:
        """For a cross-entropy with ignore_index: the counted targets of every microbatch of
        the step, summed over the ranks that split the input (the whole microbatch's count,
        whatever the loss's own layout)."""
        counts = {}
        reads = {n for s in self.modules for n in self.stages[s]["data_inputs"]}
        for name, ignore in self.program.get("counted", {}).items():
            if name not in reads:
                continue
            local = torch.tensor([float((data.local(step, name, mb, self.num_microbatches,
                                                     data_splits[name]) != ignore).sum())
                                  for mb in range(self.num_microbatches)],
                                 dtype=torch.float64, device=self.device)
            for axis, _dim in self.program["inputs"][name]["splits"]:
                group = self.mesh.groups.get(axis) if self.mesh is not None else None
                if group is not None:
                    dist.all_reduce(local, group=group)
            counts[name] = local.tolist()
        functional.set_counted(counts)

    # ---- the step
    def run(self, data, step: int, data_splits: dict, trace: bool = False,
            sync=None, training: bool = True) -> StepResult:
        """One step: `data` gives each microbatch's inputs (this rank's rows only). `sync` is
        told before and after each action (it overlaps the gradient all-reduce with the last
        backward passes)."""
        result = StepResult()
        origin = time.perf_counter()
        pending: dict[tuple[int, int], Pending] = {}
        local: dict[tuple, list[torch.Tensor]] = {}  # messages between stages on this rank
        inbox: dict[tuple, list[torch.Tensor]] = {}  # received, not yet used
        outbox: dict[tuple, list[torch.Tensor]] = {}  # to send with the next group
        in_flight: list = []  # groups of sends posted and not yet waited for
        m = self.num_microbatches
        if self.program.get("counted"):
            self.count_targets(data, step, data_splits)
        for index, (kind, what) in enumerate(self.steps):
            self.at = index
            if kind == "post":
                self._post(index, what, outbox, inbox, in_flight)
                continue
            op, stage, mb = what
            module = self.modules[stage]
            info = self.stages[stage]
            functional.at(step, mb, training)  # dropout's masks follow step and microbatch
            if sync is not None:
                sync.before(what)
            began = time.perf_counter()
            if op == "F":
                prev = self._prev(stage, mb)
                if prev is None:
                    inputs = []
                elif self._peer(prev) is None:
                    inputs = [t.detach() for t in local.pop(("act", prev, stage, mb))]
                else:
                    inputs = inbox.pop(("act", prev, stage, mb))
                inputs = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
                read = [data.local(step, name, mb, m, data_splits[name]).to(self.device)
                        for name in info["data_inputs"]]
                outputs = self._forward(module, stage, inputs + read)
                if training:
                    pending[(stage, mb)] = Pending(inputs, outputs)
                nxt = self._next(stage, mb)
                if nxt is None:
                    result.losses.append(outputs[-1].detach())
                elif self._peer(nxt) is None:
                    local[("act", stage, nxt, mb)] = outputs
                else:
                    outbox[("act", stage, nxt, mb)] = [t.detach().contiguous() for t in outputs]
            elif op == "B":
                state = pending[(stage, mb)]
                nxt = self._next(stage, mb)
                if nxt is None:
                    outs = [state.outputs[-1]]
                    grads = [torch.full_like(state.outputs[-1], 1.0 / m)]
                elif self._peer(nxt) is None:
                    outs, grads = state.outputs, local.pop(("grad", nxt, stage, mb))
                else:
                    outs = state.outputs
                    grads = inbox.pop(("grad", nxt, stage, mb))
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
                        outbox[("grad", stage, prev, mb)] = [g.detach().contiguous()
                                                             for g in input_grads]
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
            if sync is not None:
                sync.after(what)
            if trace:
                result.events.append((op, stage, mb, began - origin,
                                      time.perf_counter() - origin))
        self._wait(in_flight)
        assert not outbox and not inbox, "every message was posted and used"
        self.at = -1
        return result
