"""The contract sweep: every generated plan is refused by the checker with a located
diagnostic, or compiled, run and held to the single-process reference.

Programs of one device count share torchrun launches (a launch costs about 10 s here). A plan
that fails is written out as a `.par` file next to its reason.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from parc.dsl.diagnostics import ParcError

from .harness import compare, compile_pair, launch_all
from .plans import GeneratedPlan


@dataclass(kw_only=True)
class Outcome:
    plan: GeneratedPlan
    status: str  # refused | passed | failed
    stage: str = ""  # where it failed: check, compile, run, contract
    detail: str = ""


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-3000:]


def prepare(plan: GeneratedPlan, where: Path) -> tuple[Path, Path] | Outcome:
    """Check and compile the plan and its reference, or say why it is not run."""
    try:
        return compile_pair(plan.text, plan.name, where)
    except ParcError as exc:
        if all(d.span is not None for d in exc.diagnostics):
            return Outcome(plan=plan, status="refused", stage="check", detail=exc.render())
        return Outcome(plan=plan, status="failed", stage="check",
                       detail="a diagnostic without a location:\n" + exc.render())
    except Exception as exc:  # noqa: BLE001 - a traceback is the finding
        return Outcome(plan=plan, status="failed", stage="compile", detail=_trace(exc))


def run_sweep(plans: list[GeneratedPlan], where: Path, steps: int = 2, per_launch: int = 10,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Hold every plan to the contract; outcomes in the plans' order."""
    outcomes: dict[str, Outcome] = {}

    def record(outcome: Outcome) -> None:
        outcomes[outcome.plan.name] = outcome
        if outcome.status == "failed":
            failing = where / "failing"
            failing.mkdir(parents=True, exist_ok=True)
            (failing / f"{outcome.plan.name}.par").write_text(outcome.plan.text)
            (failing / f"{outcome.plan.name}.txt").write_text(
                f"{outcome.stage}\n{outcome.detail}\n")
        if on_outcome is not None:
            on_outcome(outcome)

    compiled: dict[int, list[tuple[GeneratedPlan, Path, Path]]] = {}
    for plan in plans:
        found = prepare(plan, where)
        if isinstance(found, Outcome):
            record(found)
        else:
            compiled.setdefault(plan.devices, []).append((plan, *found))
    for devices, group in sorted(compiled.items()):
        for start in range(0, len(group), per_launch):
            chunk = group[start:start + per_launch]
            pairs = [(dist, where / plan.name / "dump") for plan, dist, _ in chunk]
            began = time.perf_counter()
            result = launch_all(pairs, steps, devices, timeout_s=300 + 120 * len(chunk))
            failed = {f.program: f.log for f in result.failures}
            for plan, dist, ref in chunk:
                if dist in failed:
                    record(Outcome(plan=plan, status="failed", stage="run",
                                   detail=failed[dist]))
                    continue
                try:
                    compare(where / plan.name / "dump", ref, where / plan.name / "refdump",
                            steps=steps, precision=plan.precision)
                    record(Outcome(plan=plan, status="passed",
                                   detail=f"launch of {len(chunk)}: "
                                          f"{time.perf_counter() - began:.0f} s"))
                except AssertionError as exc:
                    record(Outcome(plan=plan, status="failed", stage="contract",
                                   detail=str(exc)[-3000:]))
                except Exception as exc:  # noqa: BLE001 - a traceback is the finding
                    record(Outcome(plan=plan, status="failed", stage="contract",
                                   detail=_trace(exc)))
    return [outcomes[p.name] for p in plans]
