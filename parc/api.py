"""The functions the CLI and other tools use."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import __version__
from .compiler.ir import Graph
from .compiler.ir_json import graph_to_json
from .compiler.ir_parse import IrSyntaxError, parse_graph
from .compiler.ir_show import console, show_graph, summary_table
from .compiler.passes import PASS_NAMES, PASSES, lower, run_passes
from .compiler.plan import Plan, make_plan, planned_graph
from .compiler.report import comparison, comparison_table, plan_json, plan_tables, schedule_json
from .compiler.schedules.render import chrome_trace, timeline_svg, timeline_text
from .compiler.verify import VerifyError
from .compiler.vocab import refuse_to_run
from .dsl.check import check_file
from .dsl.diagnostics import Diagnostic, ParcError
from .dsl.spec import Spec

__all__ = ["__version__", "calibrate", "check", "chrome_trace", "comparison", "comparison_table",
           "compile_program", "console", "explain", "export", "graph_to_json", "ir", "make_plan",
           "parse_overrides", "PASS_NAMES", "plan", "plan_json", "plan_of", "plan_tables",
           "program_target", "report_run", "resolve_auto", "run", "schedule_json", "show_graph",
           "summary", "summary_table", "timeline_svg", "timeline_text", "tp_explain", "tune_file",
           "tune_json", "tune_table", "winner_block", "write_atomic", "write_parallel_block"]


def check(path: str | Path, overrides: dict | None = None, plan: bool = False) -> Spec:
    """Parse and check a .par file; with `plan`, plan it too, so that a plan the runtime
    cannot run correctly is refused as well. Raises ParcError with every diagnostic."""
    spec = check_file(path, overrides)
    if plan and spec.parallel is not None and spec.train is not None and not spec.parallel.auto:
        make_plan(spec)
        refuse_to_run(spec)
    return spec


def ir(path: str | Path, after: str = "boxing", run: str | None = None,
       verify: bool = False, overrides: dict | None = None) -> Graph:
    """The IR of a .par spec after pass `after`, or of a printed .ir file after `run` passes."""
    if str(path).endswith(".ir"):
        try:
            graph = parse_graph(Path(path).read_text())
            names = [n.strip() for n in (run or "").split(",") if n.strip()]
            runnable = [name for name, _ in PASSES]
            unknown = [n for n in names if n not in runnable]
            if unknown:
                raise ParcError([Diagnostic("E108", f"unknown pass `{unknown[0]}`", None,
                                            help="passes: " + ", ".join(runnable))])
            return run_passes(graph, names, verify)
        except (OSError, IrSyntaxError, ValueError, VerifyError) as exc:
            raise ParcError([Diagnostic("E109", f"{path}: {exc}", None)]) from None
    spec = check(path, overrides)
    if after in ("partition", "fuse"):
        return planned_graph(spec, after, verify)
    return lower(spec, after, verify)


def sbp_search(path: str | Path, overrides: dict | None = None):
    """The sbp search's choices for the spec's `auto` parameters, with each one's best
    alternative (a SearchResult; None when no rule says `auto`)."""
    from .compiler.passes.context import PassContext
    from .compiler.passes.elaborate import elaborate
    from .compiler.passes.sbp_search import search
    from .compiler.passes.shapes import shapes

    spec = check(path, overrides)
    if spec.parallel is None or not spec.parallel.auto_sbp:
        return None
    context = PassContext(hardware=spec.parallel.hardware, precision=spec.train.precision,
                          sequence_parallel=spec.parallel.sequence_parallel)
    return search(shapes(elaborate(spec)), context, spec.parallel.auto_sbp, explain=True)


def plan(path: str | Path, overrides: dict | None = None) -> Plan:
    """Check, lower, partition, schedule and simulate a spec."""
    return plan_of(check(path, overrides))


def resolve_auto(spec: Spec) -> Spec:
    """A spec whose `parallel` block says `auto`, with the plan `parc tune` ranks first."""
    if spec.parallel is None or not spec.parallel.auto:
        return spec
    from dataclasses import replace

    from .compiler.tune import tune

    result = tune(spec, top=1)
    if not result.ranked:
        raise ParcError([Diagnostic("E360", f"no parallel plan of {spec.file} fits the memory "
                                    f"of `{spec.parallel.hardware.name}`", spec.parallel.span)],
                        spec.sources)
    best = result.ranked[0]
    train = replace(spec.train, microbatches=best.candidate.microbatches)
    return replace(spec, parallel=best.parallel, train=train)


def compile_program(path: str | Path, out: str | Path, overrides: dict | None = None,
                    kernels: str | None = None, compile: bool | None = None) -> Path:
    """Check, plan and write the program directory (whole, or not at all; only where no
    other file would be lost: see program_target). `compile` overrides the spec's."""
    from .compiler.codegen.program import write_program

    program_target(out)
    spec = with_compile(resolve_auto(check(path, overrides)), compile)
    return write_program(plan_of(spec), out, spec.file, kernels)


def with_compile(spec: Spec, compile: bool | None) -> Spec:
    """The spec with `compile` set as `--compile` / `--no-compile` says (None: as it is);
    E351 where the plan cannot run compiled."""
    if compile is None or spec.parallel is None:
        return spec
    from dataclasses import replace

    from .dsl.parallel import SPLIT_BACKWARD, compile_conflict

    parallel = spec.parallel
    why = compile and compile_conflict(parallel.recompute, parallel.schedule.name,
                                       parallel.context_parallel)
    if why:
        where = parallel.schedule.span if parallel.schedule.name in SPLIT_BACKWARD and \
            not parallel.recompute else parallel.span
        raise ParcError([Diagnostic("E351", why.replace("`compile true`", "--compile"),
                                    where)], spec.sources)
    return replace(spec, parallel=replace(parallel, compile=compile))


def program_target(out: str | Path) -> str:
    """"new", "empty" or "program" (a parc program is replaced); raises ParcError where a
    program may not be written (a file, another directory's files, the working directory)."""
    from .compiler.codegen.target import target_state

    return target_state(out)


def tune_file(path: str | Path, devices: int | None = None, top: int = 5,
              overrides: dict | None = None):
    """Rank the parallel plans of a spec (it needs `train` and a `parallel ... on HW`)."""
    from .compiler.tune import tune

    spec = check(path, overrides)
    if spec.parallel is None or spec.train is None:
        raise ParcError([Diagnostic("E304", f"{spec.file} needs `train` and `parallel on "
                                    "HARDWARE { auto }` (or any parallel block) to tune", None)])
    return spec, tune(spec, devices, top)


def plan_of(spec: Spec) -> Plan:
    if spec.parallel is None or spec.train is None:
        raise ParcError([Diagnostic("E304", f"{spec.file} needs `train` and `parallel` blocks "
                                    "to plan", None)])
    return make_plan(resolve_auto(spec))


def run(path: str | Path, steps: int | None = None, out: str | Path | None = None,
        overrides: dict | None = None, torchrun_args: list[str] | None = None,
        resume: bool = False, trace: str | Path | None = None,
        kernels: str | None = None, force: bool = False,
        tensorboard: str | Path | None = None, compile: bool | None = None) -> int:
    """Check everything that can be checked before launch (preflight.py), compile, launch
    with torchrun, show progress; returns the exit status. `force` launches a plan that
    is over memory."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .compiler.codegen.program import write_program
    from .preflight import check_steps, preflight
    from .runtime.launch import failure_summary, launch

    check_steps(steps)
    spec = with_compile(resolve_auto(check(path, overrides)), compile)
    if resume and spec.train.checkpoint_dir is None:
        raise ParcError([Diagnostic("E390", f"--resume: {spec.file} has no `checkpoint every N "
                                    "to \"DIR\"` in `train`", spec.train.span)], spec.sources)
    plan = plan_of(spec)
    out = Path(out or Path("runs") / spec.model.name)
    steps = steps if steps is not None else spec.train.steps
    trace = Path(trace).resolve() if trace is not None else None
    tensorboard = Path(tensorboard).resolve() if tensorboard is not None else None
    ready = preflight(spec, plan, steps, out, trace, resume, force, tensorboard)
    for note in ready.notes:
        print(note.render(spec.sources), file=sys.stderr)
    program = write_program(plan, out / "program", spec.file, kernels)
    backend = kernels or spec.parallel.kernel_backend
    if backend == "triton" and spec.parallel.hardware.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # Triton on CPU: the interpreter
    nproc = spec.parallel.hardware.devices
    if torchrun_args and any(a.startswith("--nnodes") for a in torchrun_args):
        nproc = spec.parallel.hardware.devices_per_node
    out_console = console(sys.stdout)
    first = ready.resume.step if ready.resume is not None else 0
    out_console.print(f"{spec.model.name}: {plan.schedule.family} on "
                      f"{' x '.join(f'{a}={n}' for a, n in spec.parallel.mesh)}, {steps} steps"
                      + (f", resuming after step {first} from {ready.resume.path}"
                         if ready.resume is not None else "")
                      + f"; predicted {plan.predicted_step_s * 1e3:.1f} ms/step"
                      + ("" if plan.fits else " (over memory: --force)"), highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=out_console) as progress:
        task = progress.add_task("training", total=steps, completed=first, info="starting")

        def show(record: dict) -> None:
            progress.update(task, completed=record["step"] + 1,
                            info=f"loss {record['loss']:.4f}  {record['tokens_per_s']:.0f} tok/s"
                            + (f"  eval {record['eval_loss']:.4f}" if "eval_loss" in record
                               else ""))
        extra = []
        if trace is not None:
            write_atomic(trace / "predicted_trace.json", json.dumps(
                chrome_trace(plan.simulation, plan.schedule.num_ranks, spec.model.name)))
            extra = ["--trace", str(trace)]
        if tensorboard is not None:
            extra += ["--tensorboard", str(tensorboard)]
        status = launch(program, nproc, out, steps, show, torchrun_args, extra=extra,
                        resume=resume)
    if status != 0:
        print(f"parc run: {failure_summary(out)}", file=sys.stderr)
        print(f"parc run: the job failed (exit {status}); full log in {out / 'torchrun.log'}",
              file=sys.stderr)
        return 1
    print(f"metrics: {out / 'metrics.jsonl'}")
    return 0


def tune_json(spec: Spec, result) -> dict:
    return {"considered": result.considered, "simulated": result.simulated,
            "rejected": len(result.rejected),
            "ranked": [{"plan": s.candidate.label(), "dp": s.candidate.dp, "pp": s.candidate.pp,
                        "tp": s.candidate.tp, "schedule": s.candidate.family,
                        "virtual": s.candidate.virtual, "microbatches": s.candidate.microbatches,
                        "recompute": s.candidate.recompute, "zero": s.candidate.zero,
                        "predicted_step_s": s.step_s,
                        "bubble_ratio": s.prediction.simulation.bubble_ratio,
                        "max_memory_bytes": s.memory_max, "comm_bytes_per_step": s.comm_bytes}
                       for s in result.ranked]}


def tune_table(spec: Spec, result, seconds: float):
    from rich.table import Table

    table = Table(title=f"{spec.model.name} on {spec.parallel.hardware.name}: "
                  f"{result.considered} plans considered, {result.simulated} simulated, "
                  f"{len(result.rejected)} over memory, in {seconds:.1f} s")
    for column in ("#", "plan", "step ms", "bubble", "max GB/rank", "comm GB/step"):
        table.add_column(column, justify="left" if column == "plan" else "right")
    for i, s in enumerate(result.ranked, start=1):
        table.add_row(str(i), s.candidate.label(), f"{s.step_s * 1e3:.1f}",
                      f"{s.prediction.simulation.bubble_ratio:.1%}", f"{s.memory_max / 1e9:.2f}",
                      f"{s.comm_bytes / 1e9:.2f}")
    return table


def explain(winner, runner) -> list[str]:
    from .compiler.tune import explain as why

    return why(winner, runner)


def tp_explain(spec: Spec, scored) -> list[str]:
    """How the plan's tensor-parallel layout was found: the matmuls paired, and why."""
    from .compiler.tune import tp_explain as why

    return why(spec, scored.candidate.tp)


def winner_block(spec: Spec, result) -> str:
    from .compiler.tune import parallel_text, sbp_rules

    best = result.ranked[0].candidate
    block = parallel_text(spec.parallel.hardware.name, best,
                          sbp_rules(spec, best.dp, best.tp, best.zero))
    if best.microbatches != spec.train.microbatches:
        block = (f"# parc tune: set `microbatches {best.microbatches}` in `train` for this "
                 "plan\n") + block
    return block


def write_parallel_block(path: str | Path, block: str) -> None:
    """Replace the file's `parallel` block (or append one) with `block`, atomically."""
    from .dsl import ast as dsl_ast
    from .dsl.parser import parse

    path = Path(path)
    text = path.read_text()
    module = parse(text, str(path))
    lines = text.splitlines(keepends=True)
    found = [i for i in module.items if isinstance(i, dsl_ast.Parallel)]
    if found:
        span = found[0].span
        lines[span.line - 1:span.end_line] = [block]
        new = "".join(lines)
    else:
        new = text.rstrip("\n") + "\n\n" + block
    write_atomic(path, new)


def calibrate(devices: int | None = None, name: str = "calibrated",
              torchrun_args: list[str] | None = None) -> str:
    """Measure this machine with `devices` processes (default: one per GPU, or 4 on CPU; per
    node with torchrun's multi-node flags); a `hardware` block for specs."""
    import torch

    from .runtime import calibrate as cal
    from .runtime.hardware_figures import hardware_block

    if devices is None:
        devices = torch.cuda.device_count() if torch.cuda.is_available() else 4
    try:
        figures = cal.run_job(devices, torchrun_args or [])
    except RuntimeError as exc:
        raise ParcError([Diagnostic("E370", f"calibration failed: {exc}", None)]) from None
    return hardware_block(name, figures)


def report_run(directory: str | Path):
    """(rows, svg, figures) comparing a traced run with its prediction."""
    from .compiler.report_run import report

    directory = Path(directory)
    for name in ("measured_trace.json", "predicted_trace.json"):
        if not (directory / name).exists():
            raise ParcError([Diagnostic("E391", f"{directory} has no {name}: trace a run with "
                                        f"`parc run SPEC --trace {directory}`", None)])
    return report(directory)


def find_checkpoint(directory: str | Path) -> Path:
    """The checkpoint a command names (a step_K directory, or the newest under a `to`
    directory), checked complete as a resume checks it: ParcError E392 when there is none,
    E393 when it is damaged."""
    from .runtime.checkpoint_meta import CheckpointError, inspect, locate

    try:
        path = locate(directory)
    except CheckpointError as exc:
        raise ParcError([Diagnostic("E392", str(exc), None)]) from None
    try:
        inspect(path)
    except CheckpointError as exc:
        raise ParcError([Diagnostic("E393", str(exc), None)]) from None
    return path


def _parameters(path: Path) -> dict:
    from .runtime.checkpoint import export as read
    from .runtime.checkpoint_meta import CheckpointError

    try:
        return read(path)
    except CheckpointError as exc:  # tensor data that reads wrong past the index check
        raise ParcError([Diagnostic("E393", str(exc), None)]) from None


def export(checkpoint: str | Path, out: str | Path) -> int:
    """Write a checkpoint's parameters as one torch state dict; returns how many. Raises
    ParcError for no checkpoint (E392), a damaged one (E393) or an output that cannot be
    written (E397)."""
    import torch

    _not_a_directory(Path(out), "-o")
    state = _parameters(find_checkpoint(checkpoint))
    _replace_file(out, lambda handle: torch.save(state, handle), binary=True)
    return len(state)


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    """Write a checkpoint of the std GPT or LLaMA as a Hugging Face model directory; returns
    it. Raises ParcError for no checkpoint (E392), a damaged one (E393), one of another model
    (E387), or an output directory that holds other files (E398) or cannot be written (E397)."""
    from .runtime.checkpoint_meta import inspect
    from .runtime.hf_export import ExportError, write_hf

    path = find_checkpoint(checkpoint)
    try:
        return write_hf(_parameters(path), inspect(path).about, out)
    except ExportError as exc:
        raise ParcError([Diagnostic("E387", str(exc), None)]) from None


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file whole or not at all (a temporary file renamed into place); ParcError
    (E397) when it cannot be written."""
    _replace_file(path, lambda handle: handle.write(text))


def _not_a_directory(path: Path, flag: str = "") -> None:
    if path.is_dir():
        raise ParcError([Diagnostic("E397", f"`{(flag + ' ') if flag else ''}{path}` is a "
                                    "directory: name the file to write", None)])


def _replace_file(path: str | Path, write, binary: bool = False) -> None:
    import tempfile

    path = Path(path)
    _not_a_directory(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ParcError([Diagnostic("E397", f"cannot write `{path}`: "
                                        f"{exc.strerror or exc}", None)]) from None
        raise


def parse_overrides(items: list[str]) -> dict:
    """`--set d=256` values as checker values (integers as dimensions, else floats or booleans)."""
    from .ops.dims import Dim

    out: dict = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ParcError([Diagnostic("E107", f"`--set {item}`: expected NAME=VALUE", None)])
        text = text.strip()
        if text in ("true", "false"):
            out[name] = text == "true"
            continue
        try:
            out[name] = Dim.of(int(text))
        except ValueError:
            try:
                out[name] = float(text)
            except ValueError:
                raise ParcError([Diagnostic("E107", f"`--set {item}`: the value must be a number "
                                            "or a boolean", None)]) from None
    return out


def summary(spec: Spec) -> str:
    """One line saying what a checked spec holds."""
    parts = []
    if spec.model is not None:
        count = sum(_numel(p.type) for p in spec.model.params)
        parts.append(f"model {spec.model.name}: {len(spec.model.ops)} ops, "
                     f"{_human(count)} parameters")
    if spec.parallel is not None and spec.parallel.auto:
        parts.append(f"parallel auto on {spec.parallel.hardware.name} (parc tune chooses)")
    elif spec.parallel is not None:
        mesh = " x ".join(f"{a}={n}" for a, n in spec.parallel.mesh)
        parts.append(f"mesh {mesh} on {spec.parallel.hardware.name}, "
                     f"schedule {spec.parallel.schedule.name}")
    return (" - " + "; ".join(parts)) if parts else ""


def _numel(type_) -> int:
    n = 1
    for d in type_.shape:
        n *= d.as_int() or 1
    return n


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
