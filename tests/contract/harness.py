"""Helpers for the correctness contract: build plan variants, compile, launch, compare."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.compiler.reference import reference_spec
from parc.dsl.check import check_text
from parc.runtime.shards import assemble
from parc.runtime.train import reference_steps

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).parent / "contract_driver.py"

GPT_TP = """    tokens, targets: S(0)@dp
    block[*].attn.q.w, block[*].attn.k.w, block[*].attn.v.w, block[*].mlp.fc1.w: S(1)@tp
    block[*].attn.q.b, block[*].attn.k.b, block[*].attn.v.b, block[*].mlp.fc1.b: S(0)@tp
    block[*].attn.proj.w, block[*].mlp.fc2.w: S(0)@tp"""
LLAMA_TP = """    tokens, targets: S(0)@dp
    llama_block[*].attn.q.w, llama_block[*].attn.k.w, llama_block[*].attn.v.w: S(1)@tp
    llama_block[*].ffn.gate.w, llama_block[*].ffn.up.w: S(1)@tp
    llama_block[*].attn.proj.w, llama_block[*].ffn.down.w: S(0)@tp"""
# Vocabulary-parallel embedding and head (Megatron's): table rows and head columns over tp,
# so the cross-entropy runs on split logits.
GPT_VOCAB = "\n    embed.wte: S(0)@tp"
LLAMA_VOCAB = "\n    llama_embed.wte: S(0)@tp\n    llama_loss.output.w: S(1)@tp"


def variant(example: str, mesh: str, schedule: str = "1f1b", sbp: str = "",
            layers: int | None = None, extra: str = "") -> str:
    """The example with another parallel block (and optionally another layer count)."""
    text = (ROOT / "examples" / example).read_text()
    if layers is not None:
        text = re.sub(r"layers = \d+", f"layers = {layers}", text, count=1)
    body = f"  mesh ({mesh})\n"
    if "dp" not in mesh:
        sbp = "\n".join(line for line in sbp.splitlines() if "@dp" not in line)
    if sbp:
        body += "  sbp {\n" + sbp + "\n  }\n"
    body += f"  stages auto\n  schedule {schedule}\n{extra}"
    return re.sub(r"parallel on (\w+) \{.*?\n\}", lambda m: f"parallel on {m.group(1)} {{\n"
                  f"{body}}}", text, flags=re.S)


def compile_pair(text: str, name: str, where: Path,
                 kernels: str | None = None) -> tuple[Path, Path]:
    """The distributed program (with the given kernel backend) and its torch reference."""
    spec = check_text(text, f"{name}.par")
    plan = make_plan(spec)
    dist_dir = write_program(plan, where / name / "dist", f"{name}.par", kernels)
    ref_dir = write_program(make_plan(reference_spec(spec, plan)), where / name / "ref",
                            f"{name}.par", "torch")
    return dist_dir, ref_dir


def launch(programs: list[tuple[Path, Path]], steps: int, nproc: int = 4) -> None:
    """One torchrun for many programs; each writes its dumps to the paired directory."""
    args = [str(a) for pair in programs for a in pair]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PARC_TIMEOUT_S": "60"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", "--max-restarts=0", str(DRIVER), str(steps), *args],
        capture_output=True, text=True, timeout=600, env=env)
    if result.returncode != 0:
        raise AssertionError(f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def compare(dist_dump: Path, ref_dir: Path, ref_dump: Path, steps: int = 1) -> list[float]:
    """Loss, every parameter gradient and every updated parameter equal the reference's."""
    ref_losses = reference_steps(ref_dir, steps=steps, dump=str(ref_dump))
    if steps > 1:  # a curve: Adam amplifies rounding where gradients vanish, compare losses
        return ref_losses
    grads = {}
    for what in ("grads", "params"):
        loss, got = assemble(dist_dump, what)
        ref_loss, want = assemble(ref_dump, what)
        assert abs(loss - ref_loss) < 1e-5 * max(1.0, abs(ref_loss)), (what, loss, ref_loss)
        assert set(got) == set(want), set(got) ^ set(want)
        for name in want:
            a, b = got[name], want[name]
            if what == "params":
                # Adam divides by |g|: where the true gradient is zero (a key bias under
                # softmax) the update follows rounding noise, in either program alike.
                noise = grads[name].abs() < 1e-6
                a, b = a[~noise], b[~noise]
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, n=name, w=what: f"{w} of {n}: {m}")
        if what == "grads":
            grads = want
    return ref_losses
