"""`init` reads slices: each rank's slice of each parameter, read alone from a torch file or a
safetensors file, in parc's names or a Hugging Face layout, equals the slice of the whole
imported tensor; a safetensors read fetches the slice's bytes and no more."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from parc.dsl.check import check_text
from parc.runtime import hf_export, slices
from parc.runtime.params import init_full, shard
from parc.runtime.programs import Program
from parc.runtime.weights import Weights, WeightsError, fit

from .serial import serial_program

ROOT = Path(__file__).resolve().parents[2]
SPLITS = [[], [(0, 2, 1)], [(1, 4, 2)], [(0, 2, 0), (1, 2, 1)], [(0, 2, 1), (0, 2, 0)]]


def params_of(example: str) -> dict[str, torch.Tensor]:
    spec = check_text((ROOT / "examples" / example).read_text(), example)
    return {p.name: init_full(p.name, tuple(d.as_int() for d in p.type.shape), p.init, 0)
            for p in spec.model.params}


def write(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


def layouts(tmp: Path):
    gpt, llama = params_of("gpt_tiny.par"), params_of("llama_tiny.par")
    yield "parc", gpt, dict(gpt)
    yield "hf_gpt2", gpt, hf_export.gpt2(gpt, {"heads": 2})[0]
    yield "hf_llama", llama, hf_export.llama(llama, {"heads": 4})[0]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_every_slice_is_the_slice_of_the_whole(tmp_path, suffix):
    for kind, params, state in layouts(tmp_path):
        weights = Weights(write(state, tmp_path / f"{kind}{suffix}"))
        assert set(weights) == set(params), kind
        for name, full in params.items():
            for splits in SPLITS:
                if any(d >= full.dim() for d, _, _ in splits):
                    continue
                got = weights.shard(name, tuple(full.shape), splits)
                assert torch.equal(got, shard(full, splits)), (kind, name, splits)


def test_a_padded_vocabulary_and_a_longer_position_table(tmp_path):
    params = params_of("gpt_tiny.par")
    state = {**params, "embed.wte": params["embed.wte"][:60], "embed.wpe": torch.randn(40, 32)}
    weights = Weights(write(state, tmp_path / "w.safetensors"))
    for splits in SPLITS[:3]:
        for name, shape in (("embed.wte", (64, 32)), ("embed.wpe", (16, 32))):
            want = shard(fit(name, state[name], shape), splits)
            assert torch.equal(weights.shard(name, shape, splits), want), (name, splits)


def test_a_rank_reads_its_slice_alone(tmp_path, monkeypatch):
    params = params_of("gpt_tiny.par")
    path = write(hf_export.gpt2(params, {"heads": 2})[0], tmp_path / "model.safetensors")
    read = []
    real = slices.read_box

    def counted(*args):
        out = real(*args)
        read.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr("parc.runtime.weights.read_box", counted)
    weights = Weights(path)
    name = "block[0].attn.k.w"  # the middle third of the fused c_attn, columns split 4 ways
    mine = weights.shard(name, (32, 32), [(1, 4, 1)])
    assert torch.equal(mine, shard(params[name], [(1, 4, 1)]))
    assert read == [32 * 8 * 4]


def test_a_missing_or_misshapen_weight_is_named(tmp_path):
    params = params_of("gpt_tiny.par")
    weights = Weights(write({**params, "embed.wpe": torch.zeros(16, 48)},
                            tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"`embed.wpe` has shape \(16, 48\), the spec needs "
                                           r"\(16, 32\)"):
        weights.shard("embed.wpe", (16, 32), [(0, 2, 0)])
    del params["block[1].mlp.fc1.w"]
    path = write(params, tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match=r"the weights file has no `block\[1\].mlp.fc1.w` "
                                           r"\(it has \d+ tensors\)"):
        Program(serial_program("gpt_tiny.par", tmp_path, f'init "{path}"'), None)


def test_a_damaged_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(WeightsError, match="cannot load it as a safetensors file"):
        Weights(path)
