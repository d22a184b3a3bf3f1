"""What a step leaves on disk for inspection: each rank's gradients or parameters (the
contract's dumps) and the measured trace of a step (one Chrome trace, merged by rank 0)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist


def write_trace(program, directory: str, events: list, step: int) -> None:
    """Every rank's actions of the traced step, merged by rank 0 into one Chrome trace."""
    rank = program.mesh.rank if program.mesh is not None else 0
    pp = program.mesh.coords.get("pp", 0) if program.mesh is not None else 0
    mine = [{"rank": rank, "pp": pp, "op": op, "stage": s, "mb": mb, "start": a, "end": b}
            for op, s, mb, a, b in events]
    gathered = [None] * (dist.get_world_size() if program.mesh is not None else 1)
    if program.mesh is not None:
        dist.all_gather_object(gathered, mine)
    else:
        gathered = [mine]
    if rank != 0:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    trace = [{"name": "process_name", "ph": "M", "pid": 0,
              "args": {"name": f"measured step {step}"}}]
    for part in gathered:
        for e in part:
            trace.append({"name": f"{e['op']}{e['stage']}.{e['mb']}", "cat": e["op"], "ph": "X",
                          "pid": 0, "tid": e["rank"], "ts": e["start"] * 1e6,
                          "dur": (e["end"] - e["start"]) * 1e6,
                          "args": {"stage": e["stage"], "microbatch": e["mb"], "pp": e["pp"]}})
        if part:
            trace.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": part[0]["rank"],
                          "args": {"name": f"rank {part[0]['rank']} (pp {part[0]['pp']})"}})
    (path / "measured_trace.json").write_text(json.dumps({"traceEvents": trace,
                                                          "displayTimeUnit": "ms"}))


def write_shards(program, directory: str, loss: float, what: str) -> None:
    rank = program.mesh.rank if program.mesh is not None else 0
    path = Path(directory) / f"{what}_rank{rank}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    shards = {}
    for name, (param, splits) in program.named_shards().items():
        tensor = param.grad if what == "grads" else param
        shards[name] = (tensor.detach().cpu().clone() if tensor is not None else None, splits)
    torch.save({"loss": loss, "shards": shards}, path)
