"""A checkpoint as a Hugging Face model directory: `model.safetensors` and a `config.json`
that transformers loads (`parc export DIR --hf -o OUT`). The std GPT is GPT-2's layout
(Conv1D weights [in, out], one fused qkv, a tied head), the std LLaMA LLaMA's (nn.Linear
weights [out, in], an untied head); the checkpoint's metadata carries the hyperparameters
the weights do not show (heads)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch


class ExportError(ValueError):
    pass


def _blocks(params: dict, prefix: str) -> int:
    return len({m.group(1) for k in params if (m := re.match(rf"{prefix}\[(\d+)\]\.", k))})


def gpt2(params: dict, hyper: dict) -> tuple[dict, dict]:
    """(state dict, config) in GPT-2's layout."""
    layers = _blocks(params, "block")
    vocab, d = params["embed.wte"].shape
    state = {"transformer.wte.weight": params["embed.wte"],
             "transformer.wpe.weight": params["embed.wpe"],
             "transformer.ln_f.weight": params["lm_loss.ln_f.w"],
             "transformer.ln_f.bias": params["lm_loss.ln_f.b"]}
    for i in range(layers):
        p, h = f"block[{i}]", f"transformer.h.{i}"
        for short, long in (("w", "weight"), ("b", "bias")):
            state[f"{h}.ln_1.{long}"] = params[f"{p}.ln1.{short}"]
            state[f"{h}.ln_2.{long}"] = params[f"{p}.ln2.{short}"]
            state[f"{h}.attn.c_attn.{long}"] = torch.cat(
                [params[f"{p}.attn.{n}.{short}"] for n in "qkv"], dim=-1)
            state[f"{h}.attn.c_proj.{long}"] = params[f"{p}.attn.proj.{short}"]
            state[f"{h}.mlp.c_fc.{long}"] = params[f"{p}.mlp.fc1.{short}"]
            state[f"{h}.mlp.c_proj.{long}"] = params[f"{p}.mlp.fc2.{short}"]
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
              "n_positions": params["embed.wpe"].shape[0], "n_embd": d, "n_layer": layers,
              "n_head": hyper["heads"], "activation_function": "gelu_new",
              "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0, "tie_word_embeddings": True}
    return state, config


LLAMA = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
         "proj": "self_attn.o_proj"}
FFN = {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def llama(params: dict, hyper: dict) -> tuple[dict, dict]:
    """(state dict, config) in LLaMA's layout."""
    layers = _blocks(params, "llama_block")
    vocab, d = params["llama_embed.wte"].shape
    state = {"model.embed_tokens.weight": params["llama_embed.wte"],
             "model.norm.weight": params["llama_loss.norm.w"],
             "lm_head.weight": params["llama_loss.output.w"].t().contiguous()}
    for i in range(layers):
        p, h = f"llama_block[{i}]", f"model.layers.{i}"
        state[f"{h}.input_layernorm.weight"] = params[f"{p}.attn_norm.w"]
        state[f"{h}.post_attention_layernorm.weight"] = params[f"{p}.ffn_norm.w"]
        for short, name in LLAMA.items():
            state[f"{h}.{name}.weight"] = params[f"{p}.attn.{short}.w"].t().contiguous()
        for short, name in FFN.items():
            state[f"{h}.{name}.weight"] = params[f"{p}.ffn.{short}.w"].t().contiguous()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "vocab_size": vocab, "hidden_size": d,
              "intermediate_size": params["llama_block[0].ffn.up.w"].shape[1],
              "num_hidden_layers": layers, "num_attention_heads": hyper["heads"],
              "num_key_value_heads": hyper.get("kv_heads", hyper["heads"]),
              "max_position_embeddings": hyper.get("seq", 2048), "rms_norm_eps": 1e-6,
              "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
              "attention_bias": False, "mlp_bias": False}
    return state, config


def hf_layout(params: dict, hyper: dict) -> tuple[dict, dict]:
    if "embed.wte" in params and "block[0].attn.q.w" in params:
        return gpt2(params, hyper)
    if "llama_embed.wte" in params and "llama_block[0].attn.q.w" in params:
        return llama(params, hyper)
    raise ExportError("--hf writes the std GPT (GPT-2's layout) and the std LLaMA; this "
                      "checkpoint's parameters are of another model")


def write_hf(params: dict, about: dict, out: str | Path) -> Path:
    """Write `out`/model.safetensors and `out`/config.json, whole or not at all, into a new
    or empty directory or over an earlier export (codegen/target.py's rules)."""
    from safetensors.torch import save

    from ..compiler.codegen.target import write_whole

    hyper = about.get("hyper", {})
    if "heads" not in hyper:
        raise ExportError("the checkpoint does not say how many heads the model has (it was "
                          "written by an older parc); export it as a state dict instead")
    state, config = hf_layout(params, hyper)
    config["torch_dtype"] = "float32"
    weights = save({k: v.contiguous().float() for k, v in state.items()},
                   metadata={"format": "pt"})
    return write_whole(out, {"model.safetensors": weights,
                             "config.json": json.dumps(config, indent=1) + "\n"},
                       kind="hf model")
