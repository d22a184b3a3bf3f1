"""Weights in and out: a Hugging Face GPT-2 and LLaMA (random weights from a config, no
download) give the same loss through parc's program as through transformers; a checkpoint
exports as one state dict that imports again."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from parc.dsl.check import check_text
from parc.runtime.programs import Program

from .serial import serial_program

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[2]


def program_for(example: str, tmp: Path, weights: Path, **hyper) -> Program:
    return Program(serial_program(example, tmp, f'init "{weights}"', **hyper), None)


def parc_loss(program: Program, tokens, targets) -> torch.Tensor:
    (loss,) = program.modules[0](tokens, targets)
    return loss


def test_gpt2_from_transformers(tmp_path):
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    weights = tmp_path / "gpt2.pt"
    torch.save(hf.state_dict(), weights)
    program = program_for("gpt_tiny.par", tmp_path, weights, layers=2)
    x = torch.randint(0, 64, (4, 17))
    tokens, targets = x[:, :16], x[:, 1:]
    with torch.no_grad():
        logits = hf(input_ids=tokens).logits
        want = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        got = parc_loss(program, tokens, targets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_llama_from_transformers(tmp_path):
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=32,
                                      rms_norm_eps=1e-6, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    weights = tmp_path / "llama.pt"
    torch.save(hf.state_dict(), weights)
    program = program_for("llama_tiny.par", tmp_path, weights, layers=2)
    x = torch.randint(0, 64, (2, 17))
    tokens, targets = x[:, :16], x[:, 1:]
    with torch.no_grad():
        logits = hf(input_ids=tokens).logits
        want = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        got = parc_loss(program, tokens, targets)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_missing_weights_file_is_a_diagnostic(tmp_path):
    from parc.dsl.diagnostics import ParcError

    text = (ROOT / "examples/gpt_tiny.par").read_text().replace(
        "steps 20", 'steps 20\n  init "nope.pt"')
    with pytest.raises(ParcError, match="the weights file `nope.pt` does not exist"):
        check_text(text, str(tmp_path / "x.par"))
