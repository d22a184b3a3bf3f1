"""Resharding reads slices: a checkpoint loaded under another plan gives every rank exactly
the saved parameters and AdamW moments of its slices (same plan, pp change, dp x tp, ZeRO
S(0)@dp shards, a dim split over two axes, axes of one device), and each rank reads from the
data files no more than the bytes of what it holds (plus the files' headers and its random
state), where joining whole parameters read the whole checkpoint on every rank. `init` from
a safetensors file reads each rank's slices alone too. One torchrun launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.dsl.check import check_text
from parc.runtime import hf_export
from parc.runtime.shards import _join

from ..contract.harness import GPT_TP, GPT_VOCAB, variant

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).parent / "reshard_driver.py"
GPT_ZERO = "    tokens, targets: S(0)@dp\n    *.w: S(0)@dp"
PLANS = {  # gpt_tiny with 4 heads, so that tp = 4 splits them
    "pp4": dict(mesh="pp = 4"),
    "dp2_tp2": dict(mesh="dp = 2, tp = 2", sbp=GPT_TP),
    "tp4": dict(mesh="tp = 4", sbp=GPT_TP + GPT_VOCAB),
    "zero_pp2_dp2": dict(mesh="pp = 2, dp = 2", sbp=GPT_ZERO),
    "two_axis": dict(mesh="dp = 2, tp = 2", sbp="    tokens, targets: S(0)\n"
                     "    block[*].mlp.fc1.w: S(0)@dp, S(0)@tp"),
    "size1": dict(mesh="pp = 2, dp = 1, tp = 2",
                  sbp=GPT_TP + "\n    block[*].ln1.w, block[*].ln2.w: S(0)@dp"),
}
SAVES = ["pp4", "zero_pp2_dp2", "size1"]
LOADS = [  # (plan, checkpoint of): what each covers
    ("pp4", "pp4"),  # the same plan
    ("dp2_tp2", "pp4"),  # dp x tp from whole pieces
    ("tp4", "pp4"),
    ("zero_pp2_dp2", "pp4"),  # pp change, ZeRO shards
    ("two_axis", "zero_pp2_dp2"),  # rows cut over dp and tp from rows cut over dp
    ("tp4", "zero_pp2_dp2"),  # columns from row pieces
    ("pp4", "zero_pp2_dp2"),  # whole from pieces
    ("dp2_tp2", "size1"),  # pieces cut one way over an axis of one device
    ("size1", "pp4"),
]
INITS = ["tp4", "dp2_tp2"]


def spec_text(plan: str, tmp: Path, init: Path | None = None) -> str:
    text = variant("gpt_tiny.par", **PLANS[plan]).replace("heads = 2", "heads = 4")
    extra = f'steps 2\n  checkpoint every 2 to "{tmp / "ck" / plan}"'
    if init is not None:
        extra += f'\n  init "{init}"'
    return text.replace("steps 20", extra)


def compile_program(text: str, name: str, tmp: Path) -> Path:
    return write_program(make_plan(check_text(text, f"{name}.par")), tmp / name / "program",
                         f"{name}.par")


def joined(dump: Path) -> dict[tuple[str, str], torch.Tensor]:
    """(kind, name) -> the full tensor, from every rank's dump."""
    pieces: dict[tuple, dict] = {}
    for path in sorted(dump.glob("rank*.pt")):
        for name, (splits, tensors) in torch.load(path, weights_only=False)["state"].items():
            for kind, tensor in tensors.items():
                pieces.setdefault((kind, name), {})[tuple(map(tuple, splits))] = tensor
    return {key: _join(parts) for key, parts in pieces.items()}


def errors(dump: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(dump.glob("rank*.error")))


def header_bytes(step: Path) -> int:
    """The headers of a checkpoint's safetensors data files (the length and the JSON)."""
    total = 0
    for data in step.glob("*.distcp"):
        head = data.read_bytes()[:8]
        size = int.from_bytes(head, "little")
        total += 8 + size if size < data.stat().st_size else 0  # (0: no safetensors file)
    return total


def test_each_rank_reads_its_share(tmp_path: Path):
    gpt = check_text(spec_text("pp4", tmp_path), "w.par")
    gen = torch.Generator().manual_seed(1)
    weights = {p.name: torch.randn(tuple(d.as_int() for d in p.type.shape), generator=gen)
               for p in gpt.model.params}
    hf_file = tmp_path / "model.safetensors"
    save_file(hf_export.gpt2(weights, {"heads": 4})[0], hf_file)
    programs = {name: compile_program(spec_text(name, tmp_path), name, tmp_path)
                for name in PLANS}
    for name in INITS:
        programs[f"{name}_init"] = compile_program(spec_text(name, tmp_path, hf_file),
                                                   f"{name}_init", tmp_path)
    jobs = [{"do": "save", "program": str(programs[n]), "dump": str(tmp_path / "save" / n)}
            for n in SAVES]
    jobs += [{"do": "load", "program": str(programs[plan]), "dump": str(tmp_path / "load" /
              f"{plan}_from_{of}"), "checkpoint": str(tmp_path / "ck" / of / "step_2")}
             for plan, of in LOADS]
    jobs += [{"do": "init", "program": str(programs[f"{n}_init"]),
              "dump": str(tmp_path / "init" / n)} for n in INITS]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=4", "--max-restarts=0", str(DRIVER),
                          str(tmp_path / "jobs.json")], capture_output=True, text=True,
                         timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]

    saved = {}
    for name in SAVES:
        assert not errors(tmp_path / "save" / name), errors(tmp_path / "save" / name)
        saved[name] = joined(tmp_path / "save" / name)
    model_bytes = sum(t.numel() * t.element_size() for t in saved["pp4"].values())
    rng_bytes = torch.get_rng_state().numel()
    figures = []
    for plan, of in LOADS:
        dump = tmp_path / "load" / f"{plan}_from_{of}"
        assert not errors(dump), errors(dump)
        loaded = joined(dump)
        assert loaded.keys() == saved[of].keys(), (plan, of)
        assert {kind for kind, _ in loaded} == {"param", "exp_avg", "exp_avg_sq"}
        for key, tensor in loaded.items():
            assert torch.equal(tensor, saved[of][key]), (plan, of, key)
        headers = header_bytes(tmp_path / "ck" / of / "step_2")
        for rank in range(4):
            record = torch.load(dump / f"rank{rank}.pt", weights_only=False)
            held = sum(t.numel() * t.element_size() for _, tensors in
                       record["state"].values() for t in tensors.values())
            read = sum(n for file, n in record["bytes"].items() if file.endswith(".distcp"))
            figures.append(f"{plan} <- {of} rank {rank}: read {read} B of data files, holds "
                           f"{held} B, the model is {model_bytes} B")
            assert read <= held + headers + rng_bytes, figures[-1]
            if plan == "tp4":  # a quarter of the split weights, all of the few small ones
                assert read <= model_bytes / 4 * 1.5 + headers + rng_bytes, figures[-1]
    print("\n".join(figures))

    for name in INITS:
        dump = tmp_path / "init" / name
        assert not errors(dump), errors(dump)
        loaded = joined(dump)
        for param, tensor in weights.items():
            assert torch.equal(loaded[("param", param)], tensor), (name, param)
        for rank in range(4):
            record = torch.load(dump / f"rank{rank}.pt", weights_only=False)
            held = sum(tensors["param"].numel() * 4 for _, tensors in record["state"].values())
            assert 0 < record["init_bytes"] <= held, (name, rank, record["init_bytes"], held)
