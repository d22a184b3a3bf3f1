"""The functions the CLI and other tools use."""

from __future__ import annotations

import sys
from pathlib import Path

from . import __version__
from .compiler.ir import Graph
from .compiler.ir_json import graph_to_json
from .compiler.ir_parse import IrSyntaxError, parse_graph
from .compiler.ir_show import console, show_graph, summary_table
from .compiler.passes import PASS_NAMES, PASSES, lower, run_passes
from .compiler.plan import Plan, make_plan
from .compiler.report import comparison, comparison_table, plan_json, plan_tables, schedule_json
from .compiler.schedules.render import chrome_trace, timeline_svg, timeline_text
from .compiler.verify import VerifyError
from .dsl.check import check_file
from .dsl.diagnostics import Diagnostic, ParcError
from .dsl.spec import Spec

__all__ = ["__version__", "check", "chrome_trace", "comparison", "comparison_table",
           "compile_program", "console", "graph_to_json", "ir", "make_plan", "parse_overrides",
           "PASS_NAMES", "plan", "plan_json", "plan_of", "plan_tables", "run", "schedule_json",
           "show_graph", "summary", "summary_table", "timeline_svg", "timeline_text",
           "write_atomic"]


def check(path: str | Path, overrides: dict | None = None) -> Spec:
    """Parse and check a .par file. Raises ParcError with every diagnostic."""
    return check_file(path, overrides)


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
    return lower(check(path, overrides), after, verify)


def plan(path: str | Path, overrides: dict | None = None) -> Plan:
    """Check, lower, partition, schedule and simulate a spec."""
    spec = check(path, overrides)
    if spec.parallel is None:
        raise ParcError([Diagnostic("E304", f"{spec.file} has no `parallel` block to plan",
                                    None)])
    return make_plan(spec)


def compile_program(path: str | Path, out: str | Path, overrides: dict | None = None) -> Path:
    """Check, plan and write the program directory (whole, or not at all)."""
    from .compiler.codegen.program import write_program

    spec = check(path, overrides)
    return write_program(plan_of(spec), out, spec.file)


def plan_of(spec: Spec) -> Plan:
    if spec.parallel is None or spec.train is None:
        raise ParcError([Diagnostic("E304", f"{spec.file} needs `train` and `parallel` blocks "
                                    "to compile", None)])
    return make_plan(spec)


def run(path: str | Path, steps: int | None = None, out: str | Path | None = None,
        overrides: dict | None = None, torchrun_args: list[str] | None = None) -> int:
    """Compile, launch with torchrun, show progress; returns the exit status."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .runtime.launch import failure_summary, launch

    spec = check(path, overrides)
    plan = plan_of(spec)
    out = Path(out or Path("runs") / spec.model.name)
    program = compile_program(path, out / "program", overrides)
    steps = steps or spec.train.steps
    nproc = spec.parallel.hardware.devices
    if torchrun_args and any(a.startswith("--nnodes") for a in torchrun_args):
        nproc = spec.parallel.hardware.devices_per_node
    out_console = console(sys.stdout)
    out_console.print(f"{spec.model.name}: {plan.schedule.family} on "
                      f"{' x '.join(f'{a}={n}' for a, n in spec.parallel.mesh)}, {steps} steps; "
                      f"predicted {plan.predicted_step_s * 1e3:.1f} ms/step", highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=out_console) as progress:
        task = progress.add_task("training", total=steps, info="starting")

        def show(record: dict) -> None:
            progress.update(task, completed=record["step"] + 1,
                            info=f"loss {record['loss']:.4f}  {record['tokens_per_s']:.0f} tok/s")
        status = launch(program, nproc, out, steps, show, torchrun_args)
    if status != 0:
        print(failure_summary(out), file=sys.stderr)
        print(f"parc run: the job failed (exit {status}); full log in {out / 'torchrun.log'}",
              file=sys.stderr)
        return 1
    print(f"metrics: {out / 'metrics.jsonl'}")
    return 0


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file whole or not at all (a temporary file renamed into place)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    if spec.parallel is not None:
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
