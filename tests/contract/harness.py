"""The correctness contract as a harness: build plan variants, compile each with its
single-process reference, run many programs per torchrun launch, compare.

A launch runs its programs one after another; the driver marks each one done. When a launch
fails, the first program without its mark is the one that failed (its ranks' errors are kept)
and the rest are launched again, so one bad plan costs one relaunch, not the sweep.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from parc.compiler.codegen.program import write_program
from parc.compiler.plan import make_plan
from parc.compiler.reference import reference_spec
from parc.dsl.check import check_text
from parc.runtime.programs import load_program
from parc.runtime.shards import assemble
from parc.runtime.train import reference_steps

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).parent / "driver.py"

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


def with_dropout(text: str, p: float = 0.1) -> str:
    """The GPT or LLaMA example with dropout on every residual branch."""
    text = text.replace("x = block(x, heads)", f"x = block(x, heads, drop = {p})")
    return text.replace("x = llama_block(x, heads, kv_heads, hidden)",
                        f"x = llama_block(x, heads, kv_heads, hidden, drop = {p})")


def compile_pair(text: str, name: str, where: Path,
                 kernels: str | None = None) -> tuple[Path, Path]:
    """The distributed program (with the given kernel backend) and its torch reference."""
    spec = check_text(text, f"{name}.par")
    plan = make_plan(spec)
    dist_dir = write_program(plan, where / name / "dist", f"{name}.par", kernels)
    ref_dir = write_program(make_plan(reference_spec(spec, plan)), where / name / "ref",
                            f"{name}.par", "torch")
    return dist_dir, ref_dir


@dataclass(kw_only=True)
class Failure:
    program: Path
    log: str  # what the failing ranks printed


@dataclass(kw_only=True)
class LaunchResult:
    done: list[Path] = field(default_factory=list)  # programs that ran every step
    failures: list[Failure] = field(default_factory=list)


def _torchrun(programs: list[tuple[Path, Path]], steps: int, nproc: int,
              timeout_s: float) -> subprocess.CompletedProcess:
    args = [str(a) for pair in programs for a in pair]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PARC_TIMEOUT_S": os.environ.get("PARC_TIMEOUT_S", "60")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "--max-restarts=0", str(DRIVER), str(steps), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(command, -9, out, err + f"\n(killed after "
                                           f"{timeout_s:.0f} s)")


def _rank_errors(text: str, limit: int = 4000) -> str:
    """What the ranks of a failed launch printed (not the elastic agent), the first error
    a rank raised on the last line."""
    lines = [line for line in text.splitlines() if line.startswith("[rank")]
    errors = [line for line in lines if re.match(r"\[rank\d+\]: \w+(Error|Exception)\b", line)]
    errors.sort(key=lambda line: "Connection" in line)  # a peer's death, not its cause
    stops = [line for line in text.splitlines() if "killed after" in line]
    return ("\n".join(lines)[-limit:] + "\n" + (errors[:1] or stops[:1] or [""])[0]).strip() \
        or text[-limit:]


def launch_all(programs: list[tuple[Path, Path]], steps: int, nproc: int,
               timeout_s: float = 900) -> LaunchResult:
    """Run every (program, dump dir) pair; one failing program does not stop the others."""
    result = LaunchResult()
    todo = list(programs)
    while todo:
        for _, dump in todo:
            (dump / "done").unlink(missing_ok=True)
        run = _torchrun(todo, steps, nproc, timeout_s)
        finished = [(p, d) for p, d in todo if (d / "done").exists()]
        result.done += [p for p, _ in finished]
        rest = [pair for pair in todo if pair not in finished]
        if not rest:
            break
        if run.returncode == 0:  # every rank exited cleanly but a program left no mark
            result.failures += [Failure(program=p, log="no result written") for p, _ in rest]
            break
        failed = rest[0]
        result.failures.append(Failure(program=failed[0],
                                       log=_rank_errors(run.stdout + "\n" + run.stderr)))
        todo = rest[1:]
    return result


def launch(programs: list[tuple[Path, Path]], steps: int, nproc: int = 4) -> None:
    """One torchrun for many programs; every one must run. Each writes its dumps to the paired
    directory."""
    result = launch_all(programs, steps, nproc, timeout_s=600)
    if result.failures:
        raise AssertionError("torchrun failed:\n" + "\n".join(
            f"{f.program}:\n{f.log}" for f in result.failures))


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    loss: float  # relative, every step
    rtol: float  # gradients and parameters
    atol: float  # gradients: relative to the tensor's largest reference magnitude
    param_atol: float
    noise: float  # gradients below this share of the largest make Adam's update noise
    params: bool = True  # compare the updated parameters too
    floor: float = 0.1  # a gradient's atol never counts it smaller than this share of the
    # model's largest gradient: a small tensor rounds like the sums it is made of

    @staticmethod
    def of(precision: str, step: int = 0, optimizer: str = "adamw") -> Tolerance:
        if precision == "bf16":  # each program rounds its partial sums differently
            # Adam's update is about lr * sign(g): where bf16 rounding flips a small
            # gradient's sign the parameters differ by 2 lr, so under Adam the gradients are
            # compared, and under SGD the first update too. A bias summed over every row
            # rounds its partial sums (per microbatch, per replica) by about 1% of the model's
            # largest gradient (measured: 1.5e-4 of 1.2e-2, on a bias whose own gradients are
            # 2.2e-3, with the reference rounding at the same stage boundaries).
            return Tolerance(loss=2e-2, rtol=5e-2, atol=5e-2, param_atol=2e-3, noise=5e-2,
                             params=step == 0 and optimizer != "adamw", floor=0.5)
        if step > 0 and optimizer == "adamw":
            # after a step of Adam: where a gradient was rounding noise its update is +-lr in
            # either program, and the next gradients move with it; a wrong plan is off by
            # O(1), not by this (SGD's later steps are held to fp32 rounding)
            return Tolerance(loss=1e-4, rtol=1e-2, atol=1e-2, param_atol=1e-3, noise=1e-2)
        return Tolerance(loss=1e-5, rtol=1e-4, atol=1e-6, param_atol=1e-6, noise=0.0)


def _largest(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def compare_dumps(got_dir: Path, want_dir: Path, tol: Tolerance) -> None:
    """Loss, every parameter gradient and every updated parameter of one step."""
    grads: dict[str, torch.Tensor] = {}
    for what in ("grads", "params") if tol.params else ("grads",):
        loss, got = assemble(got_dir, what)
        ref_loss, want = assemble(want_dir, what)
        assert abs(loss - ref_loss) <= tol.loss * max(1.0, abs(ref_loss)), (what, loss, ref_loss)
        assert set(got) == set(want), set(got) ^ set(want)
        largest = max((_largest(t) for t in want.values()), default=0.0)
        for name in want:
            a, b = got[name], want[name]
            assert a.shape == b.shape, (what, name, a.shape, b.shape)
            if what == "grads":
                # relative to the tensor, or to the model's largest gradient for a tensor
                # whose gradients are all small (rounding moves them alike)
                atol = max(1e-6, tol.atol * max(_largest(b), tol.floor * largest))
            else:
                # Adam divides by |g|: where the true gradient is zero (a key bias under
                # softmax) the update follows rounding noise, in either program alike.
                g = grads[name].abs()
                noise = (g < 1e-6) | (g < tol.noise * _largest(g))
                a, b = a[~noise], b[~noise]
                atol = tol.param_atol
            torch.testing.assert_close(a, b, rtol=tol.rtol, atol=atol,
                                       msg=lambda m, n=name, w=what: f"{w} of {n}: {m}")
        if what == "grads":
            grads = want


def compare(dist_dump: Path, ref_dir: Path, ref_dump: Path, steps: int = 1,
            precision: str | None = None) -> list[float]:
    """Every step's loss follows the reference's curve; after the first step every gradient
    and every updated parameter equal the reference's. The last step is also taken by the
    reference from the parameters the parallel run reached, so that its loss and gradients
    are held to one step's rounding, not to how far the two curves drifted apart (under bf16
    and Adam, rounding flips the signs of small updates: 2 lr apart after one step)."""
    train = load_program(ref_dir)["train"]
    precision = precision or train["precision"]
    optimizer = train["optimizer"]["name"]
    last = steps - 1
    ref_losses = reference_steps(ref_dir, steps=steps, dump=str(ref_dump),
                                 dump_steps=tuple(sorted({0, last})))
    got_losses = [float(x) for x in (dist_dump / "losses.txt").read_text().split()]
    assert len(got_losses) == len(ref_losses), (got_losses, ref_losses)
    for step, (a, b) in enumerate(zip(got_losses, ref_losses)):
        tol = Tolerance.of(precision, step, optimizer).loss
        assert abs(a - b) <= tol * max(1.0, abs(b)), ("loss", step, a, b)
    # the curve: after step 0 everything; later, the parameters too where rounding allows
    checks = [(0, ref_dump / "step0", Tolerance.of(precision, 0, optimizer))]
    if last > 0 and precision != "bf16":
        checks.append((last, ref_dump / f"step{last}", Tolerance.of(precision, last, optimizer)))
    if last > 0:  # one step from the same place
        _, reached = assemble(dist_dump / f"step{last - 1}", "params")
        forced = ref_dump / "from_the_run"
        reference_steps(ref_dir, steps=steps, dump=str(forced), dump_steps=(last,), from_step=last,
                        params=reached)
        checks.append((last, forced / f"step{last}",
                       replace(Tolerance.of(precision, 0, optimizer), params=False)))
    for step, want, tol in checks:
        try:
            compare_dumps(dist_dump / f"step{step}", want, tol)
        except AssertionError as exc:
            how = " (from the parameters the run reached)" if want.parent.name == \
                "from_the_run" else ""
            raise AssertionError(f"after step {step}{how}: {exc}") from None
    return ref_losses
