"""A def's calls as torch modules: one class per distinct call, one instance per call, run in
a loop where consecutive calls are instances of one class.

A stage's lines are cut where the outermost indexed call (`block[3]`) changes. Two calls are
instances of one class when their code is the same once their values, parameters, gathers
and dropout keys are renamed to the call's own (`self.block_3_attn_q_w` -> `self.attn_q_w`):
then the ops, attributes, local shapes, communication, fused kernels and recomputation are
the same. Calls with the same parameters (names below the call, local shapes, layouts, step
syncs) share a class that declares them; each distinct forward is a subclass of it. What
differs by call is the instance's: its scope (its dropout keys), its first entry in the
stage's GATHERED. A parameter another call reads (a fused residual add reads the previous
block's bias) is an argument of the reader's forward.

`fold` fills the stage's code, or returns False where the stage is written flat (op by op),
as it is when nothing repeats or a case below does not fit.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .emit import Emitter, StageCode, _Item

def below(scope: str, call: str) -> str:
    """The part of a scope inside a call: block[3].attn.q in block[3] -> .attn.q."""
    assert scope == call or scope.startswith((call + ".", call + "[")), (scope, call)
    return scope[len(call):]


def attr(name: str) -> str:
    """A Python attribute for a scoped parameter name: block[3].attn.q.w -> block_3_attn_q_w."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name)).strip("_")


CALL = re.compile(r"([A-Za-z_]\w*)\[(\d+)\](?=[.\[]|$)")
USE = re.compile(r"self\.gathers\.use\((\d+)\)")
KEY = re.compile(r"key=(\d+)")
RESERVED = {"groups", "gathers", "scope", "gather", "keys", "training"}


def call_of(scope: str | None) -> tuple[str, int] | None:
    """The outermost indexed call of a scope: block[3].attn.q -> ("block", 3)."""
    m = CALL.match(scope or "")
    return (m.group(1), int(m.group(2))) if m else None


@dataclass(kw_only=True)
class Segment:
    """Consecutive lines of one call (or of none: the stage's own lines)."""
    call: tuple[str, int] | None
    items: list
    lines: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # forward variables, in order
    outputs: list[str] = field(default_factory=list)
    # a call's, renamed to its own
    body: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)
    foreign: list[tuple] = field(default_factory=list)  # ("rel", offset, slot) | ("abs", code)
    keys: list[tuple[str, int]] = field(default_factory=list)
    gathered: list[tuple] = field(default_factory=list)  # (slot, steps, dtype)
    gather_first: int = 0  # its first entry in the stage's GATHERED
    cls: str = ""


def scope_of(call: tuple[str, int]) -> str:
    return f"{call[0]}[{call[1]}]"


def fold(em: Emitter, code: StageCode, items: list[_Item], later: set[str]) -> bool:
    segments: list[Segment] = []
    for item in items:
        c = call_of(item.scope)
        if segments and segments[-1].call == c:
            segments[-1].items.append(item)
        else:
            segments.append(Segment(call=c, items=[item]))
    calls = [s.call for s in segments if s.call is not None]
    if not calls or len(set(calls)) != len(calls):
        return False  # no call, or one cut in two by other lines
    bases = list(dict.fromkeys(c[0] for c in calls))
    # parameters: those of a call here belong to its instance
    owner: dict[str, tuple[str, int]] = {}
    slot: dict[str, str] = {}
    for p in code.params:
        c = call_of(p.name)
        if c in calls:
            owner[p.name] = c
            slot[p.name] = attr(below(p.name, scope_of(c)))
    inline = [p for p in code.params if p.name not in owner]
    if set(bases) & ({p.attr for p in inline} | RESERVED) or any(
            not s for s in slot.values()):
        return False
    by_attr = {attr(name): name for name in em.params}

    # lines, and what each segment reads and makes
    for k, seg in enumerate(segments):
        tail = [i for s in segments[k + 1:] for i in s.items]
        em.emit_body(seg.lines, seg.items, tail, later,
                     None if seg.call is None else scope_of(seg.call))
        made = {o for i in seg.items for o in i.writes}
        needed = {n for i in tail for n in i.reads} | later
        for i in seg.items:
            for n in i.reads:
                v = em.operand(n)
                if n not in made and not v.startswith("self.") and v not in seg.inputs:
                    seg.inputs.append(v)
        seg.outputs = list(dict.fromkeys(em.operand(o) for i in seg.items for o in i.writes
                                         if o in needed))

    # the stage's GATHERED: its own entries (in the forward's order), then its instances'
    # (in the order they are made: base by base, call by call)
    order: list[int] = []
    for seg in segments:
        if seg.call is None:
            order += [int(n) for line in seg.lines for n in USE.findall(line)]
    inline_count = len(order)
    ordered = sorted((s for s in segments if s.call is not None),
                     key=lambda s: (bases.index(s.call[0]), s.call[1]))
    for seg in ordered:
        uses = [int(n) for line in seg.lines for n in USE.findall(line)]
        if uses != list(range(uses[0], uses[0] + len(uses))) if uses else False:
            return False
        seg.gather_first = len(order)
        for n in uses:
            name, steps, dtype = code.gathered[n]
            if owner.get(name) != seg.call:
                return False  # a call's GATHERED lists its own parameters only
            seg.gathered.append((slot[name], steps, dtype))
        order += uses
    new_index = {old: new for new, old in enumerate(order)}
    gathered = [code.gathered[old] for old in order]

    def owned(m: re.Match) -> str:  # a call's parameter read by the stage's own lines
        name = by_attr.get(m.group(1))
        if name not in owner:
            return m.group(0)
        base, index = owner[name]
        return f"self.{base}[{index}].{slot[name]}"

    for seg in segments:
        if seg.call is None:
            seg.body = [re.sub(r"self\.(\w+)", owned, USE.sub(
                lambda m: f"self.gathers.use({new_index[int(m.group(1))]})", line))
                for line in seg.lines]
        else:
            _rename(seg, em, owner, slot, by_attr, attr)

    # classes: one per parameter set, a subclass per distinct forward
    params_of: dict[tuple[str, int], list] = {c: [] for c in calls}
    for p in code.params:
        if p.name in owner:
            params_of[owner[p.name]].append(p)
    synced_of: dict[tuple[str, int], list] = {c: [] for c in calls}
    for name, axis in code.synced:
        if name in owner:
            synced_of[owner[name]].append((slot[name], axis))
    has_gathers = bool(gathered)
    param_keys: dict[tuple, str] = {}
    classes: dict[str, dict] = {}  # parameter class -> {forward key -> segments}
    for seg in ordered:
        pkey = (seg.call[0], tuple((slot[p.name], tuple(p.local_shape), p.sbp)
                                   for p in params_of[seg.call]),
                tuple(synced_of[seg.call]))
        if pkey not in param_keys:
            n = sum(1 for k in param_keys if k[0] == seg.call[0])
            param_keys[pkey] = _camel(seg.call[0]) + (f"P{n + 1}" if n else "")
        pname = param_keys[pkey]
        fkey = (pname, tuple(seg.body), tuple(seg.args), tuple(seg.returns),
                tuple(seg.foreign), tuple(seg.keys), tuple(map(repr, seg.gathered)))
        forms = classes.setdefault(pname, {})
        forms.setdefault(fkey, []).append(seg)
    for pname in param_keys.values():
        forms = classes[pname]
        single = len(forms) == 1
        keyed = any(segs[0].keys for segs in forms.values())
        first = next(iter(forms.values()))[0]
        text = _param_class(pname, first, params_of[first.call], slot, synced_of[first.call],
                            has_gathers, keyed)
        for segs in forms.values():
            name = pname if single else f"{_camel(segs[0].call[0])}{segs[0].call[1]}"
            for s in segs:
                s.cls = name
            if not single:
                code.classes.append("\n".join(text))
                text = []
            text += _forward_class(name, pname, segs, single, keyed)
        code.classes.append("\n".join(text))

    # __init__: the instances; the forward: the stage's lines and the calls, in loops
    for base in bases:
        code.init_lines += _make(base, [s for s in ordered if s.call[0] == base],
                                 has_gathers)
    if any(synced_of.values()):
        code.init_lines.append('self.STEP_SYNC = self.STEP_SYNC + nested(self, "STEP_SYNC")')
    code.lines = _forward(segments, {em.operand(n) for n in later})
    code.inline_params = inline
    code.step_sync = [(attr(name), axis) for name, axis in code.synced if name not in owner]
    code.gathered = [(attr(name), steps, dtype) for name, steps, dtype in gathered[:inline_count]]
    code.nested_gathered = has_gathers and len(gathered) > inline_count
    for p in code.params:
        if p.name in owner:
            base, index = owner[p.name]
            p.attr = f"{base}.{index}.{slot[p.name]}"
    return True


def _rename(seg: Segment, em: Emitter, owner: dict, slot: dict, by_attr: dict, attr) -> None:
    """The segment's lines as its class's forward: its own names."""
    call = seg.call
    base, index = call
    first = min((int(n) for line in seg.lines for n in USE.findall(line)), default=0)
    def param(m: re.Match) -> str:
        name = by_attr.get(m.group(1))
        if name is None:
            return m.group(0)
        if owner.get(name) == call:
            return f"self.{slot[name]}"
        o = owner.get(name)
        where = ("rel", o[1] - index, slot[name]) if o is not None and o[0] == base else \
            ("abs", f"self.{o[0]}[{o[1]}].{slot[name]}" if o is not None else
             f"self.{attr(name)}")
        if where not in seg.foreign:
            seg.foreign.append(where)
        return f"p{seg.foreign.index(where)}"

    seg.keys = [_below_key(i.key, scope_of(call)) for i in seg.items if i.key is not None]
    keys = iter(range(len(seg.keys)))
    lines = []
    for line in seg.lines:
        line = USE.sub(lambda m: f"self.gathers.use(self.gather + {int(m.group(1)) - first})",
                       line)
        line = re.sub(r"self\.(\w+)", param, line)
        line = KEY.sub(lambda m: f"key=self.keys[{next(keys)}]", line)
        line = line.replace(scope_of(call) + ".", "")  # in comments: names below the call
        lines.append(line)
    names: dict[str, str] = {}
    for v in seg.inputs:
        names[v] = f"x{len(names)}"
    values = {em.operand(n) for i in seg.items for n in i.reads + i.writes}
    values = {v for v in values if not v.startswith("self.")}
    if values:
        pattern = re.compile(r"(?<![\w.\"])(" + "|".join(
            re.escape(v) for v in sorted(values, key=len, reverse=True)) + r")(?![\w\"])")
        for line in lines:
            for v in pattern.findall(line):
                names.setdefault(v, f"x{len(names)}")
        lines = [pattern.sub(lambda m: names[m.group(1)], line) for line in lines]
    seg.body = lines
    seg.args = [names[v] for v in seg.inputs] + [f"p{k}" for k in range(len(seg.foreign))]
    seg.returns = [names.get(v, v) for v in seg.outputs]


def _below_key(key: tuple[str, int], call: str) -> tuple[str, int]:
    return below(key[0], call), key[1]


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_")) or "Call"


def _wrapped(head: str, entries: list[str], indent: str) -> list[str]:
    if not entries:
        return [f"{indent}{head}()"]
    text = f"{head}(" + " ".join(e + "," for e in entries) + ")"
    return textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_on_hyphens=False, break_long_words=False)


def _param_class(name: str, seg: Segment, params: list, slot: dict, synced: list,
                 has_gathers: bool, keyed: bool) -> list[str]:
    base = seg.call[0]
    out = [f"class {name}(nn.Module):",
           f'    """A `{base}` call\'s parameters: `{base}[k].a.b` is self.{base}[k].a_b."""',
           ""]
    if synced:
        out.append("    # (parameter, axis): gradients all-reduced over the axis once per step")
        out += _wrapped("STEP_SYNC = ", [f'("{s}", "{a}")' for s, a in synced], "    ")
        out.append("")
    extra = ", gather: int = 0" if has_gathers else ""
    out += [f"    def __init__(self, groups: dict, scope: str{extra}) -> None:",
            "        super().__init__()",
            "        self.groups = groups  # mesh axis -> process group",
            "        self.scope = scope  # the call's own, block[k]"]
    if has_gathers:
        out.append("        self.gather = gather  # its first parameter in the stage's GATHERED")
    if keyed:
        out.append("        self.keys = dropout_keys(scope, self.KEYS)  # its dropout masks'")
    for p in params:
        out.append(f"        self.{slot[p.name]} = nn.Parameter(torch.empty({p.local_shape}))"
                   f"  # {p.sbp}")
    return out


def _forward_class(name: str, parent: str, segs: list[Segment], single: bool,
                   keyed: bool) -> list[str]:
    seg = segs[0]
    base = seg.call[0]
    indexes = [s.call[1] for s in segs]
    which = ", ".join(_spans(indexes))
    out = [""] if single else [f"class {name}({parent}):",
                               f'    """The forward of {base}{which}."""', ""]
    if single:
        out.append(f"    # the forward of {base}{which}")
    if keyed:
        out.append(f"    KEYS = {tuple(seg.keys)!r}  # (scope below the call, ordinal)")
    if seg.gathered:
        out.append("    # (parameter, [(axis, dim, whole gradient)], dtype): the gathered ones")
        out += _wrapped("GATHERED = ", [_gathered(*entry) for entry in seg.gathered], "    ")
    args = "".join(f", {a}" for a in seg.args)
    out.append(f"    def forward(self{args}):")
    out += ["        " + line for line in seg.body]
    out.append("        return " + (", ".join(seg.returns) if seg.returns else "None"))
    return out


def spans(layers: list[str]) -> list[str]:
    """Layer names, consecutive indexed calls of one def as one span: block[0..9]."""
    out: list[list] = []  # [base, first, last] or [name]
    for name in layers:
        m = re.fullmatch(r"([A-Za-z_]\w*)\[(\d+)\]", name)
        if m and out and len(out[-1]) == 3 and out[-1][0] == m.group(1) and \
                out[-1][2] == int(m.group(2)) - 1:
            out[-1][2] += 1
        elif m:
            out.append([m.group(1), int(m.group(2)), int(m.group(2))])
        else:
            out.append([name])
    return [s[0] if len(s) == 1 else f"{s[0]}[{s[1]}]" if s[1] == s[2] else
            f"{s[0]}[{s[1]}..{s[2]}]" for s in out]


def _gathered(name: str, steps: list, dtype: str | None) -> str:
    inner = " ".join(f'("{a}", {d}, {w}),' for a, d, w in steps)
    return f'("{name}", ({inner}), ' + (f'"{dtype}")' if dtype else "None)")


def _spans(indexes: list[int]) -> list[str]:
    spans: list[list[int]] = []
    for i in indexes:
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return [f"[{a}]" if a == b else f"[{a}..{b}]" for a, b in spans]


def _make(base: str, segs: list[Segment], has_gathers: bool) -> list[str]:
    """The lines that make a base's instances: a dict per run of one class whose gathers
    follow each other."""
    runs: list[list[Segment]] = []
    for s in segs:
        last = runs[-1] if runs else None
        if last and last[-1].cls == s.cls and last[-1].call[1] == s.call[1] - 1 and (
                len(last) < 2 or s.gather_first - last[-1].gather_first ==
                last[1].gather_first - last[0].gather_first):
            last.append(s)
        else:
            runs.append([s])
    parts = []
    for run in runs:
        a, b = run[0].call[1], run[-1].call[1]
        if len(run) == 1:
            g = f", gather={run[0].gather_first}" if has_gathers else ""
            parts.append(f'{{{a}: {run[0].cls}(groups, "{base}[{a}]"{g})}}')
        else:
            step = run[1].gather_first - run[0].gather_first
            at = "i" if a == 0 else f"(i - {a})"
            g = f", gather={run[0].gather_first} + {step} * {at}" if has_gathers else ""
            parts.append(f'{{i: {run[0].cls}(groups, f"{base}[{{i}}]"{g}) '
                         f"for i in range({_range(a, b + 1)})}}")
    return [f"self.{base} = Calls("] + [f"    {p}," for p in parts] + [")"]


def _forward(segments: list[Segment], later: set[str]) -> list[str]:
    """The stage's forward: its own lines, and a call or a loop for each run of calls;
    `later` are the variables the stage returns."""
    out: list[str] = []
    k = 0
    while k < len(segments):
        seg = segments[k]
        if seg.call is None:
            out += seg.body
            k += 1
            continue
        run = [seg]
        carry = None
        while k + len(run) < len(segments):
            nxt = segments[k + len(run)]
            pattern = _carried(run[-1], nxt, segments[k + len(run) + 1:], later)
            if nxt.call is None or nxt.cls != seg.cls or nxt.call[0] != seg.call[0] or \
                    nxt.call[1] != run[-1].call[1] + 1 or pattern is None or \
                    (carry is not None and pattern != carry):
                break
            carry = pattern
            run.append(nxt)
        out += _calls(run, carry)
        k += len(run)
    return out


def _carried(prev: Segment, nxt: Segment, rest: list[Segment],
             later: set[str]) -> tuple | None:
    """How each input of `nxt` comes from `prev`: ("out", q) or ("same",); None where the two
    cannot be steps of one loop (an output used by someone else, an input made elsewhere)."""
    pattern = []
    for p, v in enumerate(nxt.inputs):
        if v in prev.outputs:
            pattern.append(("out", prev.outputs.index(v)))
        elif p < len(prev.inputs) and prev.inputs[p] == v:
            pattern.append(("same",))
        else:
            return None
    if len(nxt.inputs) != len(prev.inputs):
        return None
    carried = sorted(w[1] for w in pattern if w[0] == "out")
    if carried != list(range(len(prev.outputs))):
        return None  # every output goes to the next call, and once
    used = {v for s in rest for v in s.inputs} | later
    if any(v in used for v in prev.outputs):
        return None
    return tuple(pattern)


def _args(seg: Segment, i: str | None) -> list[str]:
    out = []
    for where in seg.foreign:
        if where[0] == "abs":
            out.append(where[1])
        else:
            _, d, s = where
            at = str(seg.call[1] + d) if i is None else (
                i if d == 0 else f"{i} {'+' if d > 0 else '-'} {abs(d)}")
            out.append(f"self.{seg.call[0]}[{at}].{s}")
    return out


def _range(a: int, b: int) -> str:
    return f"{b}" if a == 0 else f"{a}, {b}"


def _calls(run: list[Segment], carry: tuple | None) -> list[str]:
    base = run[0].call[0]
    if len(run) == 1:
        seg = run[0]
        call = f"self.{base}[{seg.call[1]}]({', '.join(seg.inputs + _args(seg, None))})"
        return [f"{', '.join(seg.outputs)} = {call}" if seg.outputs else call]
    first, last = run[0], run[-1]
    state = first.inputs  # the loop's variables: the first call's inputs
    targets = [state[next(p for p, w in enumerate(carry) if w == ("out", q))]
               for q in range(len(first.outputs))]
    a, b = first.call[1], last.call[1]
    relative = any(w[0] == "rel" for w in first.foreign)
    if relative:
        head = f"for i in range({_range(a, b + 1)}):"
        call = f"self.{base}[i]({', '.join(state + _args(first, 'i'))})"
    else:
        head = f"for blk in self.{base}[{a}:{b + 1}]:"
        call = f"blk({', '.join(state + _args(first, None))})"
    out = [head, f"    {', '.join(targets)} = {call}"]
    if last.outputs != targets:
        out.append(f"{', '.join(last.outputs)} = {', '.join(targets)}")
    return out
