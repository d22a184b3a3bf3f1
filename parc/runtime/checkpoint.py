"""Sharded checkpoints with torch.distributed.checkpoint, loadable under another plan.

Each rank saves the shards it holds (parameters and AdamW moments) under keys that name the
parameter and the cut: `param/block[0].attn.q.w/d1w2i0` is dim 1 cut 2 ways, piece 0. A
metadata file lists every shard of every parameter. Loading under any plan reads the shards a
parameter was cut into, joins them and cuts this rank's piece, so a checkpoint written with
pp=4 resumes with dp=2 x tp=2.

Each rank's torch RNG state is saved too (data order needs none: batches are a function of the
seed and the step). A save goes to `step_K.tmp` and is renamed to `step_K` once every rank has
written, then `latest` is replaced; a job killed mid-save leaves the previous checkpoint as
`latest`.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from .checkpoint_meta import KINDS, CheckpointError, find, inspect, parse_cut
from .shards import _join


def _cut(splits: list) -> str:
    return "_".join(f"d{dim}w{ways}i{index}" for dim, ways, index in splits) or "full"


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def save(directory: str | Path, step: int, shards: dict, optimizer: torch.optim.Optimizer,
         about: dict | None = None) -> None:
    """Write checkpoint `step` (the number of steps done) from every rank. `about` (the
    model's name, hyperparameters, spec, fingerprint and training settings) goes into the
    metadata: `parc export --hf` and `parc sample` rebuild the model from it, and a resume
    can tell a checkpoint of another model or other settings."""
    directory = Path(directory)
    final = directory / f"step_{step}"
    tmp = directory / f"step_{step}.tmp"
    rank = dist.get_rank() if _distributed() else 0
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
    if _distributed():
        dist.barrier()
    state: dict[str, torch.Tensor] = {}
    listing: dict[str, dict] = {}
    adam_step = 0
    for name, (param, splits) in shards.items():
        cut = _cut(splits)
        state[f"param/{name}/{cut}"] = param.detach()
        moments = optimizer.state.get(param, {})
        for kind in ("exp_avg", "exp_avg_sq"):
            if kind in moments:
                state[f"{kind}/{name}/{cut}"] = moments[kind]
        if "step" in moments:
            adam_step = int(moments["step"])
        listing[name] = {"cuts": [cut], "shape": _full_shape(param.shape, splits)}
    state[f"rng/rank{rank}"] = torch.get_rng_state()
    dcp.save(state, checkpoint_id=str(tmp))
    gathered = [None] * (dist.get_world_size() if _distributed() else 1)
    if _distributed():
        dist.all_gather_object(gathered, (listing, adam_step))
    else:
        gathered = [(listing, adam_step)]
    if rank == 0:
        merged: dict[str, dict] = {}
        for part, _ in gathered:
            for name, info in part.items():
                entry = merged.setdefault(name, {"cuts": [], "shape": info["shape"]})
                for cut in info["cuts"]:
                    if cut not in entry["cuts"]:
                        entry["cuts"].append(cut)
        kinds = sorted({key.split("/", 1)[0] for key in state} & set(KINDS), key=KINDS.index)
        meta = {"step": step, "adam_step": max(s for _, s in gathered), "params": merged,
                "kinds": kinds, "ranks": len(gathered), "about": about or {}}
        (tmp / "parc_meta.json").write_text(json.dumps(meta))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        latest = directory / "latest.tmp"
        latest.write_text(final.name)
        os.replace(latest, directory / "latest")
    if _distributed():
        dist.barrier()


def _full_shape(local: torch.Size, splits: list) -> list[int]:
    shape = list(local)
    for dim, ways, _ in splits:
        shape[dim] *= ways
    return shape


def latest(directory: str | Path) -> Path | None:
    """The newest complete checkpoint (a `.tmp` one is an interrupted save, never chosen)."""
    directory = Path(directory)
    pointer = directory / "latest"
    if not pointer.exists():
        return None
    path = directory / pointer.read_text().strip()
    return path if (path / "parc_meta.json").exists() else None


def load(path: str | Path, shards: dict, copies: dict, optimizer: torch.optim.Optimizer) -> int:
    """Fill this rank's parameters and AdamW moments from checkpoint `path`; return its step.

    `copies` maps a parameter name to every local tensor holding it (a tied parameter kept on
    two stages has two)."""
    path = Path(path)
    meta = json.loads((path / "parc_meta.json").read_text())
    kinds = meta.get("kinds", list(KINDS))
    request: dict[str, torch.Tensor] = {}
    for name in shards:
        info = meta["params"].get(name)
        if info is None:
            raise KeyError(f"the checkpoint at {path} has no parameter `{name}`")
        for cut in info["cuts"]:
            shape = list(info["shape"])
            for dim, ways, _ in parse_cut(cut):
                shape[dim] //= ways
            for kind in kinds:
                request[f"{kind}/{name}/{cut}"] = torch.empty(shape)
    rank = dist.get_rank() if _distributed() else 0
    rng = f"rng/rank{rank}"
    if (path / "parc_meta.json").exists() and rank < meta.get("ranks", 0):
        request[rng] = torch.get_rng_state()
    dcp.load(request, checkpoint_id=str(path))
    if rng in request:
        torch.set_rng_state(request[rng])  # same plan size: each rank continues its stream
    with torch.no_grad():
        for name, (param, splits) in shards.items():
            cuts = meta["params"][name]["cuts"]
            full = {kind: _join({parse_cut(c): request[f"{kind}/{name}/{c}"] for c in cuts})
                    for kind in kinds}
            for target in copies.get(name, [param]):
                mine = {kind: _slice(full[kind], splits) for kind in kinds}
                target.copy_(mine["param"])
                if meta["adam_step"] > 0 and "exp_avg" in mine:
                    fused = optimizer.defaults.get("fused") or optimizer.defaults.get(
                        "capturable")  # their step count lives on the device too
                    optimizer.state[target] = {  # the moments live with their parameter
                        "step": torch.tensor(float(meta["adam_step"]), dtype=torch.float32,
                                             device=target.device if fused else "cpu"),
                        "exp_avg": mine["exp_avg"].to(target.device, copy=True),
                        "exp_avg_sq": mine["exp_avg_sq"].to(target.device, copy=True)}
    return int(meta["step"])


def export(path: str | Path) -> dict[str, torch.Tensor]:
    """Every parameter of a checkpoint (a step_K directory, or the directory holding
    `latest`) as one full tensor, in this process. Raises CheckpointError."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}", path)
    if not (path / "parc_meta.json").exists() and (path / "latest").exists():
        path = find(path)
    inspect(path)  # raises CheckpointError naming what is damaged
    meta = json.loads((path / "parc_meta.json").read_text())
    request = {}
    for name, info in meta["params"].items():
        for cut in info["cuts"]:
            shape = list(info["shape"])
            for dim, ways, _ in parse_cut(cut):
                shape[dim] //= ways
            request[f"param/{name}/{cut}"] = torch.empty(shape)
    with warnings.catch_warnings():  # one process on purpose
        warnings.simplefilter("ignore", UserWarning)
        try:
            dcp.load(request, checkpoint_id=str(path), no_dist=True)
        except Exception as exc:  # damaged tensor data: any error of the unpickler
            raise CheckpointError(f"{path} holds damaged tensor data ({type(exc).__name__}: "
                                  f"{str(exc)[:120]})", path) from None
    return {name: _join({parse_cut(c): request[f"param/{name}/{c}"] for c in info["cuts"]})
            for name, info in meta["params"].items()}


def _slice(full: torch.Tensor, splits: list) -> torch.Tensor:
    out = full
    for dim, ways, index in splits:
        out = out.chunk(ways, dim=dim)[index]
    return out.contiguous()
