"""What a checkpoint directory holds, read and checked without loading a tensor.

`inspect` proves a checkpoint complete and readable before a job resumes from it: its
`parc_meta.json` parses and lists every parameter with its shape and cuts, the
torch.distributed.checkpoint index (`.metadata`) reads and has every tensor a load will ask
for, in its shape, and the data files are long enough for every tensor in them (a
safetensors data file: its header lists each tensor the index puts there, in its shape, and
the file holds the bytes the header places). Its
`fingerprint` (parameter names and shapes) says which model wrote it; `about` keeps the
settings it was trained with, so a resume under other settings can say what changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("param", "exp_avg", "exp_avg_sq")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed or exported. `file` is the file at fault; `line`
    and `col` locate the fault inside it when it is a text file."""

    def __init__(self, message: str, file: Path, line: int | None = None,
                 col: int | None = None):
        super().__init__(message)
        self.file = file
        self.line = line
        self.col = col


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    path: Path  # the step_K directory
    step: int  # steps done when it was saved
    params: dict[str, tuple[int, ...]]  # name -> full shape
    about: dict = field(default_factory=dict)  # model and training settings (may be empty)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.params)


def fingerprint(params: dict[str, tuple[int, ...]]) -> str:
    """A model's identity for checkpoints: its parameter names and full shapes."""
    text = "\n".join(f"{name}:{list(shape)}" for name, shape in sorted(params.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def about(program: dict) -> dict:
    """What a checkpoint records of the program that saves it: the model's name, fingerprint,
    hyperparameters, spec and data (the program's `about`), and the training settings
    (parc/preflight.py `settings_of` builds the same from a spec)."""
    params = {p["name"]: tuple(p["shape"]) for stage in program["stages"]
              for p in stage["params"]}
    train = program["train"]
    keys = ("batch", "microbatches", "seed", "precision", "grad_clip", "optimizer", "data")
    return {**program.get("about", {}), "model": program["model"],
            "fingerprint": fingerprint(params), "train": {k: train.get(k) for k in keys}}


def parse_cut(text: str) -> tuple:
    """`d1w2i0_d0w2i1` -> ((1, 2, 0), (0, 2, 1)); `full` -> ()."""
    if text == "full":
        return ()
    out = []
    for part in text.split("_"):
        dim, rest = part[1:].split("w")
        ways, index = rest.split("i")
        out.append((int(dim), int(ways), int(index)))
    return tuple(out)


def find(directory: str | Path) -> Path:
    """The newest complete checkpoint under `directory` (its `latest` pointer)."""
    directory = Path(directory)
    pointer = directory / "latest"
    if not directory.is_dir():
        raise CheckpointError(f"{directory} does not exist: no checkpoint was saved there",
                              directory)
    if not pointer.is_file():
        raise CheckpointError(f"{directory} has no `latest` checkpoint (no save completed)",
                              pointer)
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {pointer}: {exc}", pointer) from None
    path = directory / name
    if not name or "/" in name or name in (".", "..") or not path.is_dir():
        raise CheckpointError(f"{pointer} names `{name[:60]}`, which is no checkpoint in "
                              f"{directory}", pointer, 1, 1)
    return path


def locate(path: str | Path) -> Path:
    """A checkpoint named by the user: a step_K directory itself, or the directory of
    `checkpoint every N to "DIR"` (its newest). Raises CheckpointError."""
    path = Path(path)
    return path if (path / "parc_meta.json").exists() else find(path)


def inspect(path: str | Path) -> CheckpointInfo:
    """Check checkpoint `path` (a step_K directory) complete and readable; raises
    CheckpointError naming the file at fault."""
    path = Path(path)
    meta = _read_meta(path / "parc_meta.json")
    params = {name: tuple(info["shape"]) for name, info in meta["params"].items()}
    _check_index(path, meta)
    return CheckpointInfo(path=path, step=meta["step"], params=params,
                          about=meta.get("about") if isinstance(meta.get("about"), dict) else {})


def _read_meta(file: Path) -> dict:
    if not file.is_file():
        raise CheckpointError(f"{file.parent} is not a complete checkpoint: it has no "
                              f"{file.name}", file)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc}", file) from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc.msg}", file, exc.lineno,
                              exc.colno) from None
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"{file} is not a parc checkpoint's metadata: {problem}", file)
    return meta


def _meta_problem(meta) -> str | None:
    """What is wrong with a parsed parc_meta.json, or None."""
    if not isinstance(meta, dict):
        return "it holds no JSON object"
    for key, kind in (("step", int), ("params", dict)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            return f"`{key}` is missing or not {'an integer' if kind is int else 'an object'}"
    if meta["step"] < 1:
        return f"`step` is {meta['step']}"
    if not isinstance(meta.get("ranks", 1), int) or not isinstance(meta.get("adam_step", 0),
                                                                   int):
        return "`ranks` or `adam_step` is not an integer"
    kinds = meta.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        return "`kinds` lists none or unknown kinds of tensor"
    if meta.get("format", "torch_save") not in ("torch_save", "safetensors"):
        return f"`format` is `{str(meta['format'])[:40]}`, which parc does not write"
    for name, info in meta["params"].items():
        if not isinstance(info, dict) or not isinstance(info.get("cuts"), list) \
                or not info["cuts"] or not isinstance(info.get("shape"), list) \
                or not all(isinstance(n, int) and n > 0 for n in info["shape"]):
            return f"parameter `{name}` has no shape or cuts"
        for cut in info["cuts"]:
            try:
                splits = parse_cut(cut)
            except (AttributeError, ValueError):
                return f"parameter `{name}` has a cut `{cut}` parc does not write"
            if any(d >= len(info["shape"]) or w < 1 or i >= w or info["shape"][d] % w
                   for d, w, i in splits):
                return f"parameter `{name}` has a cut `{cut}` that does not fit its shape"
    return None


def _check_index(path: Path, meta: dict) -> None:
    """The torch.distributed.checkpoint index reads, has every tensor a load asks for in its
    shape, and its data files are long enough."""
    import torch.distributed.checkpoint as dcp

    index = path / ".metadata"
    if not index.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: it has no .metadata",
                              index)
    try:
        metadata = dcp.FileSystemReader(str(path)).read_metadata()
        tensors = metadata.state_dict_metadata
        storage = metadata.storage_data
    except Exception as exc:  # unpickling damaged bytes can raise almost anything
        raise CheckpointError(f"{index} is damaged or not a checkpoint index "
                              f"({type(exc).__name__}: {str(exc)[:80]})", index) from None
    if not isinstance(tensors, dict) or not isinstance(storage, dict):
        raise CheckpointError(f"{index} is not a checkpoint index", index)
    kinds = meta.get("kinds", list(KINDS))
    for name, info in meta["params"].items():
        for cut in info["cuts"]:
            shape = list(info["shape"])
            for dim, ways, _ in parse_cut(cut):
                shape[dim] //= ways
            for kind in kinds:
                key = f"{kind}/{name}/{cut}"
                entry = tensors.get(key)
                size = list(getattr(entry, "size", None) or [])
                if entry is None or size != shape:
                    found = "none" if entry is None else f"shape {size}"
                    raise CheckpointError(f"{index} does not match parc_meta.json: tensor "
                                          f"`{key}` should have shape {shape}, it has {found}",
                                          index)
    for rank in range(meta.get("ranks", 0)):
        if f"rng/rank{rank}" not in tensors:
            raise CheckpointError(f"{index} lacks rank {rank}'s random state", index)
    ends: dict[str, int] = {}
    holds: dict[str, list] = {}  # data file -> the index's entries of the tensors it holds
    for key, info in storage.items():
        relative = getattr(info, "relative_path", None)
        if not isinstance(relative, str):
            raise CheckpointError(f"{index} is damaged: a tensor without a data file", index)
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if not isinstance(offset, int) or not isinstance(length, int):
            raise CheckpointError(f"{index} is damaged: a tensor without a place in {relative}",
                                  index)
        ends[relative] = max(ends.get(relative, 0), offset + length)
        holds.setdefault(relative, []).append(getattr(key, "fqn", None))
    for relative, end in sorted(ends.items()):
        data = path / relative
        try:
            size = data.stat().st_size
        except OSError:
            raise CheckpointError(f"{path} is not a complete checkpoint: {relative} is "
                                  "missing", data) from None
        if meta.get("format") == "safetensors":
            end = _safetensors_end(data, index, tensors, holds[relative])
        if size < end:
            raise CheckpointError(f"{data} is cut short: {size} bytes, the index needs {end}",
                                  data)


def _safetensors_end(data: Path, index: Path, tensors: dict, keys: list) -> int:
    """Where the last tensor of safetensors data file `data` ends, by its header, once the
    header is found to hold every tensor of `keys` in the index's shape."""
    from .slices import safetensors_header

    try:
        with data.open("rb") as stream:
            start, entries = safetensors_header(stream)
    except EOFError:  # cut inside the header: it needs at least the header
        with data.open("rb") as stream:
            head = stream.read(8)
        return 8 + int.from_bytes(head, "little") if len(head) == 8 else 8
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{data} is damaged: {exc}", data) from None
    for key in keys:
        entry = entries.get(key)
        size = list(getattr(tensors.get(key), "size", None) or [])
        if entry is None or list(entry[1]) != size:
            raise CheckpointError(f"{data} does not match {index.name}: it should hold tensor "
                                  f"`{key}` of shape {size}", data)
    return start + max((end for _, _, _, end in entries.values()), default=0)
