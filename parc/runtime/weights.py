"""Weight import: torch state dicts and safetensors files, in parc's names or Hugging Face
layouts.

A spec says `init "weights.pt"` (or `"model.safetensors"`) in `train`. `Weights` opens the
file's index alone (names, shapes, dtypes), renamed to parc's scoped parameter names: each
parameter is a view of one tensor of the file, whole, transposed or a column range of it.
Every rank then reads only its own slice of each parameter (`Weights.shard`): from a
safetensors file the box of its bytes, run by run (`slices.py`); from a torch file through a
memory map (`torch.load(mmap=True)`), cut before it is copied. No rank holds the whole model.
Hugging Face GPT-2 (`transformer.h.N...`, Conv1D weights stored [in, out], one fused qkv: q,
k and v are its three column ranges) and LLaMA (`model.layers.N...`, nn.Linear weights stored
[out, in]: read transposed) layouts are recognised by their keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .slices import DTYPES, Box, box, overlap, read_box, relative, safetensors_header, whole


class WeightsError(ValueError):
    """A weights file that cannot initialise the model (the message names what is wrong)."""


@dataclass(frozen=True)
class View:
    """A parameter in parc's layout as part of tensor `key` of the file."""

    key: str
    shape: tuple[int, ...]  # in parc's layout
    transpose: bool = False  # the file holds it [out, in] (nn.Linear)
    column: int = 0  # where it starts in the last dim of the file's tensor (a fused qkv)


def layout(keys) -> str:
    keys = list(keys)
    if any(k.startswith("transformer.h.") for k in keys):
        return "hf_gpt2"
    if any(k.startswith("model.layers.") for k in keys):
        return "hf_llama"
    return "parc"


def from_hf_gpt2(shapes: dict[str, tuple[int, ...]]) -> dict[str, View]:
    out = {}
    for key, shape in shapes.items():
        name = key.removeprefix("transformer.")
        if name in ("wte.weight", "wpe.weight"):
            out[f"embed.{name[:3]}"] = View(key, shape)
            continue
        if name.startswith("ln_f."):
            out[f"lm_loss.ln_f.{name[5]}"] = View(key, shape)
            continue
        m = re.match(r"h\.(\d+)\.(.+)$", name)
        short = {"weight": "w", "bias": "b"}.get(m.group(2).rsplit(".", 1)[1]) if m else None
        if short is None:
            continue  # lm_head is the tied embedding; attention masks are buffers
        p, rest = f"block[{m.group(1)}]", m.group(2)
        if rest.startswith("attn.c_attn."):
            for i, part in enumerate("qkv"):
                (start, length), = box(shape[-1:], [(0, 3, i)])
                out[f"{p}.attn.{part}.{short}"] = View(key, (*shape[:-1], length),
                                                       column=start)
        elif rest.startswith("attn.c_proj."):
            out[f"{p}.attn.proj.{short}"] = View(key, shape)
        elif rest.startswith(("ln_1.", "ln_2.")):
            out[f"{p}.ln{rest[3]}.{short}"] = View(key, shape)
        elif rest.startswith("mlp.c_fc."):
            out[f"{p}.mlp.fc1.{short}"] = View(key, shape)
        elif rest.startswith("mlp.c_proj."):
            out[f"{p}.mlp.fc2.{short}"] = View(key, shape)
    return out


LLAMA = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj":
         "attn.v", "self_attn.o_proj": "attn.proj", "mlp.gate_proj": "ffn.gate",
         "mlp.up_proj": "ffn.up", "mlp.down_proj": "ffn.down"}


def from_hf_llama(shapes: dict[str, tuple[int, ...]]) -> dict[str, View]:
    out = {}
    for key, shape in shapes.items():
        linear = View(key, tuple(reversed(shape)), transpose=True)  # nn.Linear is [out, in]
        if key == "model.embed_tokens.weight":
            out["llama_embed.wte"] = View(key, shape)
        elif key == "model.norm.weight":
            out["llama_loss.norm.w"] = View(key, shape)
        elif key == "lm_head.weight":
            out["llama_loss.output.w"] = linear
        m = re.match(r"model\.layers\.(\d+)\.(.+)\.weight$", key)
        if not m:
            continue
        p, rest = f"llama_block[{m.group(1)}]", m.group(2)
        if rest == "input_layernorm":
            out[f"{p}.attn_norm.w"] = View(key, shape)
        elif rest == "post_attention_layernorm":
            out[f"{p}.ffn_norm.w"] = View(key, shape)
        elif rest in LLAMA:
            out[f"{p}.{LLAMA[rest]}.w"] = linear
    return out


class Weights:
    """A weights file's tensors in parc's names (iterating gives the names), read a box at a
    time. Raises WeightsError when the file is no state dict of tensors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.suffix == ".safetensors":
            self.file: _Safetensors | _TorchFile = _Safetensors(self.path)
        else:
            self.file = _TorchFile(self.path)
        rename = {"hf_gpt2": from_hf_gpt2, "hf_llama": from_hf_llama}.get(
            layout(self.file.shapes), lambda shapes: {k: View(k, s) for k, s in shapes.items()})
        self.views = rename(self.file.shapes)

    def __contains__(self, name: str) -> bool:
        return name in self.views

    def __iter__(self):
        return iter(self.views)

    def __len__(self) -> int:
        return len(self.views)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.views[name].shape

    def read(self, name: str, want: Box | None = None) -> torch.Tensor:
        """The box `want` (whole when None) of parameter `name` in parc's layout, in the file's
        dtype."""
        view = self.views[name]
        want = whole(view.shape) if want is None else want
        there = tuple(reversed(want)) if view.transpose else want
        if there:
            (start, length), rest = there[-1], there[:-1]
            there = (*rest, (start + view.column, length))
        out = self.file.read(view.key, there)
        return out.t() if view.transpose else out

    def shard(self, name: str, shape: tuple[int, ...], splits: list) -> torch.Tensor:
        """This rank's (dim, ways, index) slice of parameter `name` as the spec's `shape` needs
        it (see `fit`), f32, read alone: rows past the file's (a padded vocabulary) are zero,
        rows past the spec's (a longer position table) are not read."""
        have = self.shape(name)
        if not _fits(have, shape):
            raise WeightsError(f"`{name}` has shape {have}, the spec needs {tuple(shape)}")
        want = box(shape, splits)
        out = torch.zeros([n for _, n in want])
        common = overlap(want, whole(have))
        if common is not None:
            where = tuple(slice(s, s + n) for s, (_, n) in zip(relative(common, want), common))
            out[where] = self.read(name, common)
        return out


class _TorchFile:
    """A torch state dict, memory-mapped: a tensor's bytes are read when it is cut and
    copied."""

    def __init__(self, path: Path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # not a zip file (torch's legacy format) cannot be mapped
            state = _load(path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"it holds a {type(state).__name__}, not a state dict (a dict "
                               "of parameter names to tensors)")
        for key, value in state.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise WeightsError(f"its entry `{str(key)[:60]}` is a {type(value).__name__}, "
                                   "not a tensor: it is no state dict")
        self.state = state
        self.shapes = {key: tuple(value.shape) for key, value in state.items()}

    def read(self, key: str, want: Box) -> torch.Tensor:
        return self.state[key][tuple(slice(s, s + n) for s, n in want)]


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: any error of the unpickler
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise WeightsError(f"cannot load it as a torch state dict ({type(exc).__name__}"
                           f"{': ' + reason if reason else ''})") from None


class _Safetensors:
    """A safetensors file: its header read once, each box of a tensor read run by run."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with path.open("rb") as stream:
                self.start, self.entries = safetensors_header(stream)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot load it as a safetensors file ({exc})") from None
        for key, (dtype, _, _, _) in self.entries.items():
            if dtype not in DTYPES:
                raise WeightsError(f"its tensor `{key[:60]}` is of dtype {dtype}, which parc "
                                   "does not read")
        self.shapes = {key: shape for key, (_, shape, _, _) in self.entries.items()}

    def read(self, key: str, want: Box) -> torch.Tensor:
        dtype, shape, begin, _ = self.entries[key]
        with self.path.open("rb") as stream:
            return read_box(stream, self.start + begin, shape, DTYPES[dtype],
                            [s for s, _ in want], [n for _, n in want])


def _fits(have: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return tuple(have) == tuple(shape) or (len(have) == len(shape) > 0
                                           and tuple(have[1:]) == tuple(shape[1:]))


def fit(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The imported tensor in the spec's shape: a vocabulary padded (as Megatron pads 50257 to
    50304) gets zero rows, a longer position table is cut to the spec's sequence length."""
    if tuple(tensor.shape) == tuple(shape):
        return tensor.float()
    if _fits(tuple(tensor.shape), shape):
        out = torch.zeros(shape)
        rows = min(tensor.shape[0], shape[0])
        out[:rows] = tensor[:rows].float()
        return out
    raise WeightsError(f"`{name}` has shape {tuple(tensor.shape)}, the spec needs "
                       f"{tuple(shape)}")


def check_weights(path: str, params: dict[str, tuple[int, ...]]) -> None:
    """The file initialises every parameter (name -> full shape): it loads, holds each name
    in a shape `fit` accepts, and only finite values (read one tensor at a time). Raises
    WeightsError."""
    imported = Weights(path)
    missing = [name for name in params if name not in imported]
    if missing:
        sample = ", ".join(f"`{k}`" for k in list(imported)[:3]) or "none"
        more = f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"it has no `{missing[0]}`{more}; it holds {len(imported)} "
                           f"tensors in parc's names, e.g. {sample}")
    for name, shape in params.items():
        tensor = fit(name, imported.read(name), shape)
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"`{name}` holds {bad} NaN or infinite values")
