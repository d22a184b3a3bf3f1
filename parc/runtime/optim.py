"""The optimizer and its learning rate: AdamW or SGD over two parameter groups (weight decay
or not, as the plan says per parameter), stepped fused, with the rate each step from the
schedule (constant, or warmup then cosine or linear decay to min_lr, as Megatron and nanoGPT
do)."""

from __future__ import annotations

import math

import torch


def lr_at(schedule: dict, lr: float, step: int) -> float:
    """The learning rate of step `step` (0-based): warmup to `lr` over `warmup` steps, then
    decay to `min_lr` at `decay_steps`, and `min_lr` after it."""
    kind, warmup, min_lr = schedule["kind"], schedule["warmup"], schedule["min_lr"]
    if kind == "constant":
        return lr
    if step < warmup:
        return lr * (step + 1) / warmup
    decay = schedule["decay_steps"] - warmup
    if decay <= 0 or step >= schedule["decay_steps"]:
        return min_lr
    progress = (step - warmup) / decay
    if kind == "cosine":
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
    return lr - (lr - min_lr) * progress


def build(program) -> torch.optim.Optimizer:
    """AdamW or SGD as one fused step over all of a rank's parameters (a multi-tensor kernel on
    CUDA, and on CPU too: stepping tensors one at a time costs a dozen ops each); parameters
    the plan marks `decay: false` (norm weights, biases, embeddings by default) in a group of
    their own without weight decay."""
    spec = program.spec["train"]["optimizer"]
    decayed, kept = [], []
    for stage in program.spec["stages"]:
        module = program.modules.get(stage["index"])
        if module is not None:
            for p in stage["params"]:
                (decayed if p.get("decay", True) else kept).append(module.get_parameter(p["attr"]))
    groups = [{"params": decayed, "weight_decay": spec["weight_decay"]},
              {"params": kept, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]] or [{"params": []}]
    if spec["name"] == "sgd":
        kwargs = dict(lr=spec["lr"], momentum=spec["momentum"])
        make = torch.optim.SGD
    else:
        kwargs = dict(lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"])
        make = torch.optim.AdamW
    try:
        return make(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # a torch without a fused kernel for it
        return make(groups, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, program, step: int) -> float:
    """Give every group the schedule's rate for `step`; return it."""
    train = program.spec["train"]
    rate = lr_at(train.get("lr_schedule", {"kind": "constant"}), train["optimizer"]["lr"], step)
    for group in optimizer.param_groups:
        group["lr"] = rate
    return rate
