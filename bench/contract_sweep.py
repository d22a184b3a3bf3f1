"""The contract sweep at scale: generated plans, each refused by `parc check` with a located
diagnostic or run for two steps and held to the single-process reference (loss of every step,
every gradient and every updated parameter).

    python bench/contract_sweep.py --plans 500 --seed 0 [--start 0] [--tune 40]

Prints a table of outcomes by model, schedule family, mesh size and SBP kind, and writes
bench/out/contract_sweep.json; every failing plan is written to bench/out/sweep/failing/ as a
`.par` file with its reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.contract.plans import generate  # noqa: E402
from tests.contract.sweep import run_sweep  # noqa: E402
from tests.contract.tuned import tuned_plans  # noqa: E402


def _table(outcomes, key) -> list[str]:
    rows: dict[str, Counter] = {}
    for o in outcomes:
        for k in key(o):
            rows.setdefault(k, Counter())[o.status] += 1
    lines = []
    for k in sorted(rows):
        c = rows[k]
        lines.append(f"  {k:<28} {sum(c.values()):>5} {c['passed']:>7} {c['refused']:>8} "
                     f"{c['failed']:>7}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="index of the first plan")
    parser.add_argument("--tune", type=int, default=0,
                        help="also this many plans of `parc tune`'s candidates")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    where = out / "sweep"
    where.mkdir(parents=True, exist_ok=True)
    plans = generate(args.seed, args.plans, args.start)
    if args.tune:
        plans += tuned_plans(args.seed, args.tune)
    began = time.perf_counter()

    def show(o) -> None:
        mark = {"passed": ".", "refused": "r", "failed": "F"}[o.status]
        print(mark, end="", flush=True)
        if o.status == "failed":
            print(f"\n{o.plan.name} ({o.stage}): {o.detail.strip().splitlines()[-1][:160]}",
                  flush=True)

    outcomes = run_sweep(plans, where, on_outcome=show)
    seconds = time.perf_counter() - began
    print()
    header = f"  {'':<28} {'plans':>5} {'passed':>7} {'refused':>8} {'failed':>7}"
    sections = [("model", lambda o: [o.plan.model]),
                ("schedule family", lambda o: [o.plan.family]),
                ("devices", lambda o: [f"{o.plan.devices} devices"]),
                ("SBP kind", lambda o: list(o.plan.sbp) or ["none (all B)"]),
                ("precision / recompute", lambda o: [o.plan.precision,
                                                      f"recompute {o.plan.recompute}"]),
                ("source", lambda o: [o.plan.source])]
    for title, key in sections:
        print(f"by {title}:\n{header}")
        print("\n".join(_table(outcomes, key)))
    counts = Counter(o.status for o in outcomes)
    print(f"{len(outcomes)} plans in {seconds:.0f} s: {counts['passed']} passed, "
          f"{counts['refused']} refused with a located diagnostic, {counts['failed']} failed")
    refusals = Counter(o.detail.split("error[", 1)[1].split("]", 1)[0] for o in outcomes
                       if o.status == "refused" and "error[" in o.detail)
    print("refusals by code: " + ", ".join(f"{c} {n}" for c, n in refusals.most_common()))
    data = {"seed": args.seed, "start": args.start, "plans": len(outcomes),
            "seconds": seconds, "counts": dict(counts), "refusals": dict(refusals),
            "outcomes": [{"name": o.plan.name, "model": o.plan.model, "family": o.plan.family,
                          "mesh": o.plan.mesh, "devices": o.plan.devices,
                          "sbp": list(o.plan.sbp), "precision": o.plan.precision,
                          "recompute": o.plan.recompute, "source": o.plan.source,
                          "status": o.status, "stage": o.stage,
                          "detail": o.detail[-600:] if o.status != "passed" else ""}
                         for o in outcomes]}
    (out / "contract_sweep.json").write_text(json.dumps(data, indent=1) + "\n")
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
