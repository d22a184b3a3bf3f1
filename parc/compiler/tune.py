"""`parc tune`: search the parallel plans of a spec for the fastest one that fits memory.

Candidates: every dp x pp x tp factorisation of the device count (tp inside a node, dividing
the query heads of every attention the graph has), schedule families and virtual stages,
microbatch counts, recompute on or off, and ZeRO-style parameter sharding over dp. Costs are
reused: the model is lowered once per (dp, tp, ZeRO) with two layers and the block's cost is
repeated for the rest; a plan is only simulated when its lower bound (perfectly balanced
compute plus the family's bubble) can still beat the K-th best found, best bound first. The
tensor-parallel layout of each tp comes from the graph's structure (`auto_tp`), not from
parameter names.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..dsl import ast
from ..dsl.check import _Reporter
from ..dsl.parallel import ParallelChecker, glob_regex
from ..dsl.parser import parse
from ..dsl.spec import HardwareSpec, ParallelSpec, ScheduleSpec, Spec
from ..ops.dims import Dim
from .auto_tp import Layout, layout, query_heads
from .auto_tp import explain as explain_layout
from .cost import CostModel
from .passes import lower
from .passes.partition import StageConfig, Unit, _balance, build_units
from .plan import Prediction, predict


@dataclass(frozen=True)
class Candidate:
    dp: int
    pp: int
    tp: int
    family: str
    virtual: int
    microbatches: int
    recompute: bool
    zero: bool

    def label(self) -> str:
        fam = f"interleaved(v={self.virtual})" if self.family == "interleaved" else self.family
        extras = (" +recompute" if self.recompute else "") + (" +zero" if self.zero else "")
        return f"dp={self.dp} pp={self.pp} tp={self.tp} {fam} m={self.microbatches}{extras}"


@dataclass
class Scored:
    candidate: Candidate
    prediction: Prediction
    comm_bytes: float  # per step, every rank's traffic added up
    memory_max: float
    parallel: ParallelSpec

    @property
    def step_s(self) -> float:
        return self.prediction.step_s


@dataclass
class TuneResult:
    ranked: list[Scored]
    rejected: list[tuple[Candidate, float]]  # over memory by this many bytes (lower bound)
    considered: int
    simulated: int
    invalid: int
    notes: list[str] = field(default_factory=list)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def tp_layout(spec: Spec, tp: int) -> Layout:
    """The tensor-parallel split of every parameter, read off the model's graph."""
    return layout(lower(spec, "elaborate"), tp)


def tp_explain(spec: Spec, tp: int) -> list[str]:
    """Which matmuls `sbp_rules` pairs over tp and why, and what stays whole."""
    return explain_layout(tp_layout(spec, tp)) if tp > 1 else []


def _patterns(names: list[str], entries: dict[str, str], known: list[str]) -> list[str]:
    """Globs for `names` (a layer index written `[*]`), each matching only names that take
    the same entry; where a glob would catch another name, the names themselves."""
    out: list[str] = []
    made: dict[str, list[str]] = {}
    for name in names:
        made.setdefault(re.sub(r"\[\d+\]", "[*]", name), []).append(name)
    for pattern, sources in made.items():
        regex = glob_regex(pattern)
        caught = [n for n in known if regex.match(n)]
        same = all(entries.get(n) == entries[sources[0]] for n in caught)
        out += [pattern] if same else sources
    return out


def sbp_rules(spec: Spec, dp: int, tp: int, zero: bool) -> list[str]:
    """SBP rules for a mesh: batch over dp, the graph's tensor-parallel layout over tp
    (`auto_tp`: Megatron's pattern wherever the structure has it, vocabulary-parallel
    embedding and head included), ZeRO over dp."""
    rules = []
    inputs = ", ".join(i.name for i in spec.model.inputs)
    if dp > 1 and inputs:
        rules.append(f"{inputs}: S(0)@dp")
    dp_extra = zero and dp > 1
    if tp > 1:
        rules += _tp_rules(spec, tp, dp_extra)
    if dp_extra:
        # every weight matrix, whatever the model calls it (the tables and the tensor-parallel
        # weights above keep their own rule and add the dp split there)
        patterns = sorted({"*." + p.name.rsplit(".", 1)[-1] if "." in p.name else p.name
                           for p in spec.model.params if p.type.rank == 2})
        if patterns:
            rules.append(", ".join(patterns) + ": S(0)@dp")
    return rules


def _tp_rules(spec: Spec, tp: int, zero: bool) -> list[str]:
    """One rule per role (column weights, their biases, row weights, tables, heads) and entry."""
    found = tp_layout(spec, tp)
    rank = {p.name: p.type.rank for p in spec.model.params}
    tables = {v.param for v in found.vocab if v.kind == "table"}
    roles: dict[str, list[str]] = {"column": [], "bias": [], "row": [], "table": [], "head": []}
    for p in found.pairs:
        roles["column"] += [n for n, _ in p.column]
        roles["bias"] += list(p.bias)
        roles["row"].append(p.row[0])
    for v in found.vocab:
        roles[v.kind].append(v.param)
        if v.bias:
            roles["bias"].append(v.bias)

    def entry(name: str) -> str:
        dim = found.splits[name]
        text = f"S({dim})@tp"
        if zero and rank[name] == 2 and name not in tables:
            text += f", S({1 - dim})@dp"
        return text

    entries = {n: entry(n) for n in found.splits}
    known = [i.name for i in spec.model.inputs] + list(rank)
    rules = []
    for names in roles.values():
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(entries[n], []).append(n)
        for text, group in groups.items():
            rules.append(", ".join(_patterns(group, entries, known)) + ": " + text)
    return rules


def parallel_text(hardware: str, c: Candidate, rules: list[str]) -> str:
    """The winner as a `parallel` block the user can paste."""
    axes = [(a, n) for a, n in (("dp", c.dp), ("pp", c.pp), ("tp", c.tp)) if n > 1] or \
        [("dp", 1)]
    lines = [f"parallel on {hardware} {{", "  mesh (" + ", ".join(f"{a} = {n}" for a, n in axes)
             + ")"]
    if rules:
        lines += ["  sbp {"] + [f"    {r}" for r in rules] + ["  }"]
    lines.append("  stages auto")
    schedule = f"interleaved(virtual = {c.virtual})" if c.family == "interleaved" else c.family
    lines.append(f"  schedule {schedule}")
    if c.recompute:
        lines.append("  recompute all")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _parallel_spec(spec: Spec, hw: HardwareSpec, hw_name: str, c: Candidate) -> ParallelSpec | None:
    """Check the candidate's parallel block against the model, as `parc check` would."""
    text = parallel_text(hw_name, c, sbp_rules(spec, c.dp, c.tp, c.zero))
    node = parse(text, "<tune>").items[0]
    assert isinstance(node, ast.Parallel)
    train = replace(spec.train, microbatches=c.microbatches)
    err = _Reporter([])
    par = ParallelChecker(node, spec.model, train, hw, err, set()).check()
    if err.diagnostics or par is None:
        return None
    return par


def _small_model(spec: Spec) -> Spec | None:
    """The spec with two blocks instead of `layers`, found by trying each model parameter
    equal to the block count; None when no parameter sets it."""
    from ..dsl.check import check_program
    from ..dsl.diagnostics import ParcError
    from ..dsl.loader import load_text

    layers = spec.model.num_layers
    if layers <= 2:
        return None
    for name, value in spec.model.hyper.items():
        if value != layers or isinstance(value, bool):
            continue
        program = load_text(spec.sources[spec.file], spec.file)
        try:
            small = check_program(program, {name: Dim.of(2)})
        except ParcError:
            continue
        if small.model.num_layers == 2:
            return small
    return None


def _expand(units: list[Unit], layers: int) -> list[Unit]:
    """Units of the two-layer model with the second block repeated to `layers` blocks."""
    blocks = [i for i, u in enumerate(units) if u.name.endswith("[1]")]
    if not blocks:
        return units
    k = blocks[0]
    base = units[k].name[:-3]
    head = [u for u in units[:k] if not u.name.startswith(base + "[")]
    tail = units[k + 1:]
    copies = [replace(units[k], name=f"{base}[{i}]") for i in range(layers)]
    return head + copies + tail


class Tuner:
    def __init__(self, spec: Spec, hardware: HardwareSpec, hw_name: str):
        self.spec, self.hw, self.hw_name = spec, hardware, hw_name
        self.layers = spec.model.num_layers
        self.small = _small_model(spec)
        self.graphs: dict = {}
        self.unit_cache: dict = {}
        self.parallels: dict = {}
        self.invalid = 0

    def lowered(self, dp: int, tp: int, zero: bool, microbatches: int):
        """(graph, parallel spec) for the mesh without pp, lowered with two layers."""
        key = (dp, tp, zero)
        if key not in self.graphs:
            c = Candidate(dp, 1, tp, "1f1b", 1, microbatches, False, zero)
            model = self.small or self.spec
            par = _parallel_spec(model, replace(self.hw, devices=dp * tp), self.hw_name, c)
            if par is None:
                self.graphs[key] = None
            else:
                train = replace(model.train, microbatches=microbatches)
                self.graphs[key] = lower(replace(model, train=train, parallel=par))
        return self.graphs[key]

    def full_parallel(self, c: Candidate) -> ParallelSpec | None:
        """The candidate's parallel spec on the full model; SBP is checked once per mesh."""
        key = (c.dp, c.pp, c.tp, c.zero)
        if key not in self.parallels:
            base = Candidate(c.dp, c.pp, c.tp, "1f1b", 1, c.microbatches, False, c.zero)
            self.parallels[key] = _parallel_spec(self.spec, self.hw, self.hw_name, base)
        par = self.parallels[key]
        if par is None:
            return None
        schedule = ScheduleSpec(c.family, virtual=c.virtual)
        return replace(par, schedule=schedule, recompute=("all",) if c.recompute else ())

    def units(self, dp, pp, tp, zero, microbatches, precision) -> tuple[list[Unit], CostModel]:
        key = (dp, pp, tp, zero, microbatches)
        if key not in self.unit_cache:
            self.unit_cache[key] = self._units(dp, pp, tp, zero, microbatches, precision)
        return self.unit_cache[key]

    def _units(self, dp, pp, tp, zero, microbatches, precision):
        graph = self.lowered(dp, tp, zero, microbatches)
        mesh = tuple((a, n) for a, n in (("dp", dp), ("pp", pp), ("tp", tp)))
        batch = self.spec.train.batch // microbatches
        graph = graph.with_(mesh=mesh, bindings=(("batch", batch),))
        fused = (self.spec.parallel.kernels or ("triton" if self.hw.device == "cuda" else
                                                "torch")) == "triton"
        cost = CostModel(graph, self.hw, precision, fused)
        units = build_units(graph, cost)
        if self.small is not None:
            units = _expand(units, self.layers)
        return units, cost


def candidates(spec: Spec, hw: HardwareSpec, devices: int) -> list[Candidate]:
    heads = query_heads(lower(spec, "elaborate"))  # a head is never split over tp
    layers = spec.model.num_layers or 1
    out = []
    for tp in _divisors(devices):
        if tp > hw.devices_per_node or any(h % tp for h in heads):
            continue
        for pp in _divisors(devices // tp):
            dp = devices // (tp * pp)
            if pp > max(1, layers) or spec.train.batch % dp:
                continue
            per_dp = spec.train.batch // dp
            # every count that divides the batch, down to microbatches of one sample; a
            # pipeline needs at least one microbatch per stage
            counts = [m for m in _divisors(per_dp) if m >= pp]
            families = [("1f1b", 1)] if pp == 1 else [("gpipe", 1), ("1f1b", 1), ("zb_h1", 1)]
            if pp > 1:
                families += [("interleaved", v) for v in (2, 4) if layers % (pp * v) == 0]
            for m in counts:
                for family, v in families:
                    if family == "interleaved" and m % pp:
                        continue
                    if family == "zb_h1" and pp * m > 128:  # list scheduling grows as n^2
                        continue
                    for recompute in (False, True):
                        for zero in ((False, True) if dp > 1 else (False,)):
                            out.append(Candidate(dp, pp, tp, family, v, m, recompute, zero))
    return out


def tune(spec: Spec, devices: int | None = None, top: int = 5,
         where: Callable[[Candidate], bool] | None = None) -> TuneResult:
    """The `top` fastest plans that fit; `where` keeps only the candidates it accepts."""
    par = spec.parallel
    hw = par.hardware
    if devices is not None and devices != hw.devices:
        hw = replace(hw, devices=devices, devices_per_node=min(hw.devices_per_node, devices))
    devices = hw.devices
    precision, optimizer = spec.train.precision, spec.train.optimizer.name
    tuner = Tuner(spec, hw, hw.name)
    found = [c for c in candidates(spec, hw, devices) if where is None or where(c)]
    bounded = []
    rejected = []
    for c in found:
        graph = tuner.lowered(c.dp, c.tp, c.zero, c.microbatches)
        if graph is None:
            tuner.invalid += 1
            continue
        units, cost = tuner.units(c.dp, c.pp, c.tp, c.zero, c.microbatches, precision)
        static = sum(u.static_bytes(optimizer) for u in units) / c.pp
        if static > hw.memory:
            rejected.append((c, static - hw.memory))
            continue
        work = sum(u.time + (u.fwd if c.recompute else 0.0) for u in units)
        compute = work * c.microbatches / c.pp
        if c.family in ("gpipe", "1f1b", "interleaved"):  # their bubble with balanced stages
            compute *= 1 + (c.pp - 1) / (c.virtual * c.microbatches)
        bounded.append((compute, len(bounded), c, units, cost))
    heapq.heapify(bounded)
    best: list[tuple[float, int, Scored]] = []  # max-heap of the top K by step time (negated)
    simulated = 0
    while bounded:
        bound, order, c, units, cost = heapq.heappop(bounded)
        if len(best) >= top and bound >= -best[0][0]:
            break
        config = StageConfig(c.pp * c.virtual, c.pp, c.family, c.microbatches, hw.memory,
                             optimizer, None, ("all",) if c.recompute else ())
        bounds = _balance(units, config, cost)
        prediction = predict(units, bounds, config, cost, optimizer)
        simulated += 1
        memory_max = max(m.total for m in prediction.memory)
        if memory_max > hw.memory:
            rejected.append((c, memory_max - hw.memory))
            continue
        par_spec = tuner.full_parallel(c)
        if par_spec is None:
            tuner.invalid += 1
            continue
        comm = _comm_bytes(units, prediction, c)
        scored = Scored(c, prediction, comm, memory_max, par_spec)
        heapq.heappush(best, (-prediction.step_s, order, scored))
        if len(best) > top:
            heapq.heappop(best)
    ranked = sorted((s for _, _, s in best), key=lambda s: s.step_s)
    rejected.sort(key=lambda r: r[1])
    return TuneResult(ranked, rejected, len(found), simulated, tuner.invalid)


def _comm_bytes(units: list[Unit], prediction: Prediction, c: Candidate) -> float:
    """Traffic of one step: collectives per microbatch, parameter sync once, p2p both ways."""
    per_mb = sum(u.comm_bytes for u in units)
    once = sum(u.sync_bytes for u in units)
    p2p = sum(st.send_bytes for st in prediction.stages[:-1]) * 2 * c.dp * c.tp
    return (per_mb + p2p) * c.microbatches + once


def explain(winner: Scored, runner: Scored) -> list[str]:
    """Where the time goes in the winner and the runner-up, and why the winner is faster."""
    lines = []
    for label, s in (("winner", winner), ("runner-up", runner)):
        sim = s.prediction.simulation
        ranks = len(sim.busy)
        compute = max(sim.busy)
        bubble = sim.step_time - compute
        sync = s.step_s - sim.step_time
        lines.append(f"{label}: {s.candidate.label()}: step {s.step_s * 1e3:.1f} ms = compute "
                     f"{compute * 1e3:.1f} ms on the busiest of {ranks} ranks + waiting "
                     f"{bubble * 1e3:.1f} ms (bubble {sim.bubble_ratio:.1%}) + gradient sync "
                     f"and optimizer {sync * 1e3:.1f} ms; {s.comm_bytes / 1e9:.2f} GB moved; "
                     f"{s.memory_max / 1e9:.1f} GB on the fullest rank")
    gain = runner.step_s - winner.step_s
    parts = []
    wc, rc = max(winner.prediction.simulation.busy), max(runner.prediction.simulation.busy)
    if abs(rc - wc) > 0.05 * gain:
        parts.append(f"{(rc - wc) * 1e3:+.1f} ms of compute per rank")
    wb = winner.prediction.simulation.step_time - wc
    rb = runner.prediction.simulation.step_time - rc
    if abs(rb - wb) > 0.05 * gain:
        parts.append(f"{(rb - wb) * 1e3:+.1f} ms of pipeline waiting")
    ws = winner.step_s - winner.prediction.simulation.step_time
    rs = runner.step_s - runner.prediction.simulation.step_time
    if abs(rs - ws) > 0.05 * gain:
        parts.append(f"{(rs - ws) * 1e3:+.1f} ms of gradient sync and optimizer")
    lines.append(f"the winner is {gain * 1e3:.1f} ms faster: the runner-up spends "
                 + (", ".join(parts) if parts else "about the same in each part") + ".")
    return lines

