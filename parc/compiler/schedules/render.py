"""Timelines of a simulated schedule: a terminal picture, an SVG figure, a Chrome trace."""

from __future__ import annotations

from html import escape

from rich.text import Text

from .simulate import Simulation

# E, O, G: the vocabulary passes of `vocab_parallel pp` (on every rank at once)
COLORS = {"F": "#4C72B0", "B": "#55A868", "W": "#DD8452", "E": "#8172B3", "O": "#C44E52",
          "G": "#937860"}
TERMINAL = {"F": "white on blue", "B": "black on green", "W": "black on yellow",
            "E": "white on magenta", "O": "white on red", "G": "black on cyan"}


def timeline_text(sim: Simulation, num_ranks: int, width: int = 96) -> Text:
    """One row per rank; each cell shows the microbatch running then (last digit)."""
    text = Text()
    step = sim.step_time or 1.0
    for r in range(num_ranks):
        cells: list[tuple[str, str]] = [("·", "dim")] * width
        for e in sim.events:
            if e.rank != r:
                continue
            a = max(0, min(width - 1, int(e.start / step * width)))
            b = max(a + 1, min(width, round(e.end / step * width)))
            for i in range(a, b):
                cells[i] = (str(e.action.mb % 10), TERMINAL[e.action.op])
        text.append(f"rank {r} ", style="bold")
        for char, style in cells:
            text.append(char, style=style)
        text.append("\n")
    text.append("legend: ", style="bold")
    shown = {e.action.op for e in sim.events}
    for op, name in (("F", "forward"), ("B", "backward"), ("W", "weight grad"),
                     ("E", "vocab embedding"), ("O", "vocab output + loss"),
                     ("G", "vocab embedding grad")):
        if op in "EOG" and op not in shown:
            continue
        text.append(f" {op} ", style=TERMINAL[op])
        text.append(f" {name}  ")
    text.append("·", style="dim")
    text.append(" idle (digits: microbatch)\n")
    return text


def timeline_svg(sim: Simulation, num_ranks: int, title: str) -> str:
    """A figure in the style of the GPipe and Megatron papers: ranks as rows, time across."""
    width, row, left, top = 1000.0, 34.0, 70.0, 50.0
    step = sim.step_time or 1.0
    scale = (width - left - 20) / step
    height = top + num_ranks * row + 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="{left}" y="40" fill="#444">step {step * 1e3:.3f} ms, bubble '
           f'{sim.bubble_ratio:.1%}</text>']
    for r in range(num_ranks):
        y = top + r * row
        out.append(f'<text x="10" y="{y + row / 2 + 4:.1f}">rank {r}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{step * scale:.2f}" height="{row - 6}" '
                   'fill="#f2f2f2" stroke="#ccc"/>')
    for e in sim.events:
        x, w = left + e.start * scale, max(0.5, (e.end - e.start) * scale)
        y = top + e.rank * row
        out.append(f'<rect x="{x:.2f}" y="{y + 3}" width="{w:.2f}" height="{row - 6}" '
                   f'fill="{COLORS[e.action.op]}" stroke="white" stroke-width="0.5">'
                   f'<title>{e.action} {e.start * 1e3:.3f}-{e.end * 1e3:.3f} ms</title></rect>')
        if w >= 12:
            out.append(f'<text x="{x + w / 2:.2f}" y="{y + row / 2 + 4:.1f}" fill="white" '
                       f'text-anchor="middle">{e.action.mb}</text>')
    ly = top + num_ranks * row + 25
    for i, (op, name) in enumerate((("F", "forward"), ("B", "backward (input grad when W "
                                                       "is split)"), ("W", "weight grad"))):
        x = left + i * 240
        out.append(f'<rect x="{x}" y="{ly - 10}" width="14" height="14" fill="{COLORS[op]}"/>')
        out.append(f'<text x="{x + 20}" y="{ly + 1}">{escape(name)}</text>')
    out.append(f'<rect x="{left + 720}" y="{ly - 10}" width="14" height="14" fill="#f2f2f2" '
               'stroke="#ccc"/>')
    out.append(f'<text x="{left + 740}" y="{ly + 1}">idle (bubble)</text>')
    out.append(f'<text x="{left}" y="{ly + 24}" fill="#666">numbers are microbatches; time '
               'runs left to right</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def chrome_trace(sim: Simulation, num_ranks: int, name: str) -> dict:
    """Chrome / Perfetto trace-event JSON: one thread per rank, one slice per action."""
    events = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": name}}]
    for r in range(num_ranks):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": r,
                       "args": {"name": f"rank {r}"}})
    for e in sim.events:
        events.append({"name": str(e.action), "cat": e.action.op, "ph": "X", "pid": 0,
                       "tid": e.rank, "ts": e.start * 1e6, "dur": (e.end - e.start) * 1e6,
                       "args": {"stage": e.action.stage, "microbatch": e.action.mb}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
