"""Weight import and export: torch state dicts in parc's names or Hugging Face layouts.

A spec says `init "weights.pt"` in `train`; every rank loads the file, renames its tensors to
parc's scoped parameter names, and keeps its shard. Hugging Face GPT-2 (`transformer.h.N...`,
Conv1D weights stored [in, out], one fused qkv) and LLaMA (`model.layers.N...`, nn.Linear
weights stored [out, in]) layouts are recognised by their keys.
"""

from __future__ import annotations

import re

import torch


def layout(state: dict) -> str:
    keys = list(state)
    if any(k.startswith("transformer.h.") for k in keys):
        return "hf_gpt2"
    if any(k.startswith("model.layers.") for k in keys):
        return "hf_llama"
    return "parc"


def from_hf_gpt2(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        key = key.removeprefix("transformer.")
        if key in ("wte.weight", "wpe.weight"):
            out[f"embed.{key[:3]}"] = value
            continue
        if key.startswith("ln_f."):
            out[f"lm_loss.ln_f.{key[5]}"] = value
            continue
        m = re.match(r"h\.(\d+)\.(.+)$", key)
        if not m:
            continue  # lm_head is the tied embedding; attention masks are buffers
        i, rest = m.group(1), m.group(2)
        p = f"block[{i}]"
        short = {"weight": "w", "bias": "b"}[rest.rsplit(".", 1)[1]]
        if rest.startswith("attn.c_attn."):
            for name, part in zip("qkv", value.chunk(3, dim=-1)):
                out[f"{p}.attn.{name}.{short}"] = part.contiguous()
        elif rest.startswith("attn.c_proj."):
            out[f"{p}.attn.proj.{short}"] = value
        elif rest.startswith(("ln_1.", "ln_2.")):
            out[f"{p}.ln{rest[3]}.{short}"] = value
        elif rest.startswith("mlp.c_fc."):
            out[f"{p}.mlp.fc1.{short}"] = value
        elif rest.startswith("mlp.c_proj."):
            out[f"{p}.mlp.fc2.{short}"] = value
    return out


LLAMA = {"self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj":
         "attn.v", "self_attn.o_proj": "attn.proj", "mlp.gate_proj": "ffn.gate",
         "mlp.up_proj": "ffn.up", "mlp.down_proj": "ffn.down"}


def from_hf_llama(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key == "model.embed_tokens.weight":
            out["llama_embed.wte"] = value
        elif key == "model.norm.weight":
            out["llama_loss.norm.w"] = value
        elif key == "lm_head.weight":
            out["llama_loss.output.w"] = value.t().contiguous()
        m = re.match(r"model\.layers\.(\d+)\.(.+)\.weight$", key)
        if not m:
            continue
        p, rest = f"llama_block[{m.group(1)}]", m.group(2)
        if rest == "input_layernorm":
            out[f"{p}.attn_norm.w"] = value
        elif rest == "post_attention_layernorm":
            out[f"{p}.ffn_norm.w"] = value
        elif rest in LLAMA:
            out[f"{p}.{LLAMA[rest]}.w"] = value.t().contiguous()  # nn.Linear is [out, in]
    return out


class WeightsError(ValueError):
    """A weights file that cannot initialise the model (the message names what is wrong)."""


def load_weights(path: str) -> dict[str, torch.Tensor]:
    """A state dict from `path`, renamed to parc's parameter names. Raises WeightsError when
    the file is no state dict of tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: any error of the unpickler
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise WeightsError(f"cannot load it as a torch state dict ({type(exc).__name__}"
                           f"{': ' + reason if reason else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"it holds a {type(state).__name__}, not a state dict (a dict of "
                           "parameter names to tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(f"its entry `{str(key)[:60]}` is a {type(value).__name__}, not "
                               "a tensor: it is no state dict")
    kind = layout(state)
    if kind == "hf_gpt2":
        return from_hf_gpt2(state)
    if kind == "hf_llama":
        return from_hf_llama(state)
    return dict(state)


def fit(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The imported tensor in the spec's shape: a vocabulary padded (as Megatron pads 50257 to
    50304) gets zero rows, a longer position table is cut to the spec's sequence length."""
    if tuple(tensor.shape) == tuple(shape):
        return tensor.float()
    if tensor.dim() == len(shape) and all(a <= b for a, b in zip(tensor.shape[1:], shape[1:])) \
            and tensor.shape[1:] == torch.Size(shape[1:]):
        out = torch.zeros(shape)
        rows = min(tensor.shape[0], shape[0])
        out[:rows] = tensor[:rows].float()
        return out
    raise WeightsError(f"`{name}` has shape {tuple(tensor.shape)}, the spec needs "
                       f"{tuple(shape)}")


def check_weights(path: str, params: dict[str, tuple[int, ...]]) -> None:
    """The file initialises every parameter (name -> full shape): it loads, holds each name
    in a shape `fit` accepts, and only finite values. Raises WeightsError."""
    imported = load_weights(path)
    missing = [name for name in params if name not in imported]
    if missing:
        sample = ", ".join(f"`{k}`" for k in list(imported)[:3]) or "none"
        more = f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise WeightsError(f"it has no `{missing[0]}`{more}; it holds {len(imported)} "
                           f"tensors in parc's names, e.g. {sample}")
    for name, shape in params.items():
        tensor = fit(name, imported[name], shape)
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"`{name}` holds {bad} NaN or infinite values")
