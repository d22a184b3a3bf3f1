"""`parc report DIR`: what a traced run measured next to what the plan predicted."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .schedules.render import timeline_svg
from .schedules.schedule import Action
from .schedules.simulate import Event, Simulation


def _events(trace: dict, key: str) -> list[Event]:
    out = []
    for e in trace["traceEvents"]:
        if e.get("ph") != "X":
            continue
        op = e["cat"]
        args = e["args"]
        rank = args.get(key, e["tid"]) if key else e["tid"]
        start = e["ts"] / 1e6
        out.append(Event(rank, Action(op, args["stage"], args["microbatch"]), start,
                         start + e["dur"] / 1e6))
    return out


def _simulation(events: list[Event]) -> Simulation:
    if not events:
        return Simulation(0.0, 0.0, [], [], [], [])
    origin = min(e.start for e in events)
    events = [Event(e.rank, e.action, e.start - origin, e.end - origin) for e in events]
    ranks = sorted({e.rank for e in events})
    index = {r: i for i, r in enumerate(ranks)}
    events = [Event(index[e.rank], e.action, e.start, e.end) for e in events]
    step = max(e.end for e in events)
    busy = [0.0] * len(ranks)
    for e in events:
        busy[e.rank] += e.end - e.start
    bubble = 1.0 - sum(busy) / (len(ranks) * step) if step else 0.0
    return Simulation(step, bubble, busy, [0.0] * len(ranks), [0] * len(ranks), events)


def stage_times(sim: Simulation) -> dict[tuple[str, int], float]:
    """Mean duration of each (op, stage) over its microbatches."""
    sums: dict[tuple[str, int], list[float]] = {}
    for e in sim.events:
        sums.setdefault((e.action.op, e.action.stage), []).append(e.end - e.start)
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _height(svg: str) -> int:
    return int(float(re.search(r'height="([0-9.]+)"', svg).group(1)))


def report(directory: str | Path) -> tuple[list[list[str]], str, dict]:
    """(table rows, side-by-side SVG, figures) for a `parc run --trace DIR` directory."""
    directory = Path(directory)
    measured_trace = json.loads((directory / "measured_trace.json").read_text())
    predicted_trace = json.loads((directory / "predicted_trace.json").read_text())
    # the measured trace has one row per process; a pipeline rank's dp/tp copies run alike,
    # so compare the first process of each pipeline rank with the prediction
    measured_all = _events(measured_trace, "")
    first = {}
    for e in measured_all:
        pp = next(x["args"]["pp"] for x in measured_trace["traceEvents"]
                  if x.get("ph") == "X" and x["tid"] == e.rank)
        first.setdefault(pp, e.rank)
    keep = set(first.values())
    measured = _simulation([e for e in measured_all if e.rank in keep])
    predicted = _simulation(_events(predicted_trace, ""))
    rows = [["step time (ms)", f"{predicted.step_time * 1e3:.2f}",
             f"{measured.step_time * 1e3:.2f}"],
            ["bubble", f"{predicted.bubble_ratio:.1%}", f"{measured.bubble_ratio:.1%}"]]
    p_times, m_times = stage_times(predicted), stage_times(measured)
    for key in sorted(p_times, key=lambda k: (k[1], "FBW".index(k[0]))):
        rows.append([f"stage {key[1]} {key[0]} (ms)", f"{p_times[key] * 1e3:.3f}",
                     f"{m_times.get(key, 0.0) * 1e3:.3f}"])
    top = timeline_svg(predicted, len(predicted.busy), "predicted by the plan")
    bottom = timeline_svg(measured, len(measured.busy), "measured (one process per pipeline rank)")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="1000" '
           f'height="{_height(top) + _height(bottom)}">\n{top}'
           f'<g transform="translate(0,{_height(top)})">\n{bottom}</g>\n</svg>\n')
    figures = {"predicted_step_s": predicted.step_time, "measured_step_s": measured.step_time,
               "predicted_bubble": predicted.bubble_ratio,
               "measured_bubble": measured.bubble_ratio}
    return rows, svg, figures
