"""Sharded checkpoints with torch.distributed.checkpoint, loadable under another plan.

Each rank saves the shards it holds (parameters and AdamW moments) under keys that name the
parameter and the cut: `param/block[0].attn.q.w/d1w2i0` is dim 1 cut 2 ways, piece 0. A
metadata file lists every shard of every parameter; the data files are safetensors files
(torch.distributed.checkpoint's SAFETENSORS serialization), which keep each tensor's bytes
row-major at a known place. Loading under any plan works out, from the cuts alone, which saved
pieces overlap this rank's slice of each parameter and moment, and where (`slices.py`), and
reads only those parts of those pieces, run by run, straight into this rank's slice: nothing
is joined, and a rank reads about its share of the checkpoint, not the whole model. So a
checkpoint written with pp=4 resumes with dp=2 x tp=2, each rank reading what it holds.
(A checkpoint of torch.save-format data files, as parc wrote before, still loads: each
overlapping piece is then read whole and cut.)

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
from torch.distributed.checkpoint import filesystem
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem
from torch.futures import Future

from .checkpoint_meta import KINDS, CheckpointError, find, inspect, parse_cut
from .slices import DTYPES, Box, box, overlap, read_box, relative, safetensors_header, volume, whole

# The data files' format. torch before 2.8 writes torch.save's only (such a checkpoint loads,
# its pieces read whole); parc_meta.json without `format` is one of those too.
SAFETENSORS = getattr(getattr(filesystem, "SerializationFormat", None), "SAFETENSORS", None)
FORMAT = "safetensors" if SAFETENSORS is not None else "torch_save"


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
    options = {"serialization_format": SAFETENSORS} if SAFETENSORS is not None else {}
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(tmp), **options))
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
                "kinds": kinds, "ranks": len(gathered), "format": FORMAT, "about": about or {}}
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
    Only the parts of the saved pieces that overlap this rank's slices are read.

    `copies` maps a parameter name to every local tensor holding it (a tied parameter kept on
    two stages has two)."""
    path = Path(path)
    meta = json.loads((path / "parc_meta.json").read_text())
    kinds = meta.get("kinds", list(KINDS))
    request: dict[str, torch.Tensor] = {}
    reads: dict[str, list] = {}
    for name, (_, splits) in shards.items():
        info = meta["params"].get(name)
        if info is None:
            raise KeyError(f"the checkpoint at {path} has no parameter `{name}`")
        mine = box(info["shape"], splits)
        for kind in kinds:
            request[f"{kind}/{name}"] = torch.empty([n for _, n in mine])
            reads[f"{kind}/{name}"] = _parts(path, f"{kind}/{name}", info, mine)
    rank = dist.get_rank() if _distributed() else 0
    rng = f"rng/rank{rank}"
    if rank < meta.get("ranks", 0):
        request[rng] = torch.get_rng_state()
        reads[rng] = [(rng, (0,), (0,), tuple(request[rng].shape))]
    dcp.load(request, storage_reader=_Reader(path, meta), planner=_Planner(path, reads))
    if rng in request:
        torch.set_rng_state(request[rng])  # same plan size: each rank continues its stream
    with torch.no_grad():
        for name, (param, _) in shards.items():
            mine = {kind: request[f"{kind}/{name}"] for kind in kinds}
            for target in copies.get(name, [param]):
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
    request, reads = {}, {}
    for name, info in meta["params"].items():
        request[name] = torch.empty(info["shape"])
        reads[name] = _parts(path, f"param/{name}", info, whole(info["shape"]))
    with warnings.catch_warnings():  # one process on purpose
        warnings.simplefilter("ignore", UserWarning)
        try:
            dcp.load(request, storage_reader=_Reader(path, meta), planner=_Planner(path, reads),
                     no_dist=True)
        except Exception as exc:  # damaged tensor data: any error of the unpickler
            raise CheckpointError(f"{path} holds damaged tensor data ({type(exc).__name__}: "
                                  f"{str(exc)[:120]})", path) from None
    return request


def _parts(path: Path, stem: str, info: dict, want: Box) -> list[tuple]:
    """What to read of tensor `stem` (a kind and a parameter) to fill the box `want` of it:
    (saved key, where the part starts in that piece, where in `want`, its lengths) for every
    saved piece that overlaps `want`. The pieces come from one way of cutting (a tied
    parameter may have been saved cut two ways); they must cover `want`."""
    patterns: dict[tuple, list[str]] = {}
    for cut in info["cuts"]:
        patterns.setdefault(tuple((d, w) for d, w, _ in parse_cut(cut)), []).append(cut)
    for cuts in patterns.values():
        parts, covered = [], 0
        for cut in cuts:
            piece = box(info["shape"], parse_cut(cut))
            common = overlap(piece, want)
            if common is not None:
                parts.append((f"{stem}/{cut}", relative(common, piece), relative(common, want),
                              tuple(n for _, n in common)))
                covered += volume(common)
        if covered == volume(want):
            return parts
    raise CheckpointError(f"the checkpoint at {path} lacks pieces of `{stem}`: its cuts "
                          f"{info['cuts']} do not cover {list(want)}", path / "parc_meta.json")


class _Planner(DefaultLoadPlanner):
    """Plans the reads `_parts` chose (destination -> parts) instead of whole saved tensors:
    each read item is one box of one saved piece, copied into its place in the destination."""

    def __init__(self, path: Path, reads: dict[str, list[tuple]]):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self.path = path
        self.reads = reads

    def create_local_plan(self) -> LoadPlan:
        saved = self.metadata.state_dict_metadata
        items = []
        for dest, parts in self.reads.items():
            for key, inside, at, lengths in parts:
                if key not in saved:
                    raise CheckpointError(f"the checkpoint at {self.path} has no tensor `{key}`",
                                          self.path / ".metadata")
                items.append(ReadItem(
                    type=LoadItemType.TENSOR, dest_index=MetadataIndex(dest),
                    dest_offsets=torch.Size(at),
                    storage_index=MetadataIndex(key, saved[key].chunks[0].offsets),
                    storage_offsets=torch.Size(inside), lengths=torch.Size(lengths)))
        return LoadPlan(items)


class _Reader(dcp.FileSystemReader):
    """Reads of each saved piece only the box a read item asks for, from safetensors data
    files; a checkpoint in torch.save's format goes to the stock reader (pieces read whole)."""

    def __init__(self, path: Path, meta: dict):
        super().__init__(str(path))
        self.safetensors = meta.get("format") == "safetensors"

    def read_data(self, plan, planner) -> Future:
        if not self.safetensors:
            return super().read_data(plan, planner)
        files: dict[str, list[ReadItem]] = {}
        for item in plan.items:
            files.setdefault(self.storage_data[item.storage_index].relative_path,
                             []).append(item)
        for relative_path, items in files.items():
            with self.fs.create_stream(self.fs.concat_path(self.path, relative_path),
                                       "rb") as stream:
                start, tensors = safetensors_header(stream)
                for item in items:
                    dtype, shape, begin, _ = tensors[item.storage_index.fqn]
                    part = read_box(stream, start + begin, shape, DTYPES[dtype],
                                    item.storage_offsets, item.lengths)
                    target = planner.resolve_tensor(item).detach()
                    target.copy_(part)
                    planner.commit_tensor(item, target)
        done: Future = Future()
        done.set_result(None)
        return done
