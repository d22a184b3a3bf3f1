"""`parc ir --explain-sbp`: why the sbp search placed each `auto` parameter as it did, against
the best plan with that parameter forced to each other layout."""

from __future__ import annotations

import re

from .passes.sbp_search import AxisResult, SearchResult


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _delta(chosen: AxisResult, other: AxisResult) -> str:
    """What the other layout costs more (+) or less (-), by part, largest first."""
    parts = {"compute": other.compute - chosen.compute}
    for kind in set(chosen.comm) | set(other.comm):
        parts[kind] = other.comm.get(kind, 0.0) - chosen.comm.get(kind, 0.0)
    shown = sorted((p for p in parts.items() if abs(p[1]) >= 1e-7), key=lambda p: -abs(p[1]))
    return ", ".join(f"{kind} {'+' if t > 0 else '-'}{_ms(abs(t))}" for kind, t in shown[:3]) \
        or "the same parts"


def explain_lines(result: SearchResult) -> list[str]:
    lines = [f"sbp search: {result.seconds:.2f} s; batch split over "
             f"{', '.join(result.batch_axes) or 'no axis'} (auto parameters whole there)"]
    for axis in result.axes:
        lines.append(f"{axis.axis}: best plan {_ms(axis.total)} (compute {_ms(axis.compute)}, "
                     f"communication {_ms(sum(axis.comm.values()))})")
        groups: dict[str, list[str]] = {}
        for name in axis.layouts:
            groups.setdefault(re.sub(r"\[\d+\]", "[*]", name), []).append(name)
        for names in groups.values():
            first = names[0]
            chosen = axis.layouts[first]
            alike = sum(axis.layouts[n] == chosen for n in names[1:])
            head = f"  {first} {chosen}@{axis.axis}" + (f" (and {alike} like it)" if alike else "")
            others = sorted(((key[2], r) for key, r in result.forced.items()
                             if key[:2] == (axis.axis, first)), key=lambda kv: kv[1].total)
            if not others:
                lines.append(f"{head}: {_ms(axis.total)}; no other layout fits")
                continue
            sbp, best = others[0]
            lines.append(f"{head}: {_ms(axis.total)} vs {sbp} {_ms(best.total)} "
                         f"({_delta(axis, best)})")
    return lines
