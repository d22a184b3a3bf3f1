"""partition: assign every op to a pipeline stage.

The units are the model's top-level calls (embedding, each block, head and loss), in order;
work outside any call joins the unit before it. Explicit stages are taken as written. With
`stages auto`, dynamic programming over the unit sequence minimises the slowest stage
(forward + backward + weight gradient + sending its activations over the link to the next
stage's rank; the last sends nothing) subject to each rank's memory, counting the embedding
and the loss, whose imbalance users otherwise discover at run time; a second pass then
evens the compute among the splits as fast (a slow link or a heavy head can set the slowest
stage). Under a skip schedule each stage's time is weighed by the share of microbatches that
visit it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ...ops.comm import COMMS
from ..cost import CostModel, optimizer_state_bytes
from ..gathered import working_set
from ..ir import Graph, Op
from ..schedules import V_SHAPED, placement
from ..vocab import VocabLayers


@dataclass(frozen=True)
class StageConfig:
    num_stages: int
    pp: int
    family: str
    microbatches: int
    memory: float  # bytes per device
    optimizer: str = "adamw"
    explicit: tuple[tuple[str, ...], ...] | None = None
    recompute: tuple[str, ...] = ()
    # the share of microbatches each stage runs (skip paths leave middle stages out): the
    # balance weighs a stage's time by it, so a stage skipped more often takes more layers
    visits: tuple[float, ...] | None = None
    # `vocab_parallel` under 1F1B may run one more warm-up forward per rank (plan.py's
    # vocab_placement): one more microbatch in flight
    extra_inflight: int = 0

    @property
    def stage_rank(self) -> tuple[int, ...]:
        """Stage -> pipeline rank, as the family places them (schedules.placement)."""
        return placement(self.family, self.pp, self.num_stages)


@dataclass
class Unit:
    name: str
    ops: list[int] = field(default_factory=list)
    fwd: float = 0.0
    bwd_input: float = 0.0
    bwd_weight: float = 0.0
    bwd_deferred: float = 0.0  # the matmuls' share of bwd_weight: what a split W runs
    deferred_ops: int = 0  # matmuls with a weight gradient
    deferred_bytes: float = 0.0  # their results' gradients, kept from a split B to its W
    step: float = 0.0  # parameter gradient sync, once per step
    flops: float = 0.0  # forward + backward on one rank, one microbatch
    comm_bytes: float = 0.0  # collective traffic per microbatch, forward and backward
    sync_bytes: float = 0.0  # parameter gradient sync traffic, once per step
    param_numel: float = 0.0  # local elements of the parameters it owns
    param_tensors: int = 0  # how many parameters it owns
    # local elements of the gradients it holds over a step: a gathered parameter's is whole
    # (summed over the microbatches, reduce-scattered once per step)
    grad_numel: float = 0.0
    # (bytes as gathered, f32 bytes) of each parameter gathered where it is read, in order
    gathered: list[tuple[float, float]] = field(default_factory=list)
    act_bytes: float = 0.0  # saved for backward, one microbatch
    out_bytes: float = 0.0  # what it hands to the next unit, one microbatch

    @property
    def time(self) -> float:
        return self.fwd + self.bwd_input + self.bwd_weight

    def static_bytes(self, optimizer: str) -> float:
        """Parameters, their gradients and the optimizer's state, held all the step."""
        return self.param_numel * (4 + optimizer_state_bytes(optimizer)) + self.grad_numel * 4


@dataclass
class Partition:
    units: list[Unit]
    bounds: list[tuple[int, int]]  # per stage: [start, stop) over units
    explanation: list[str]
    feasible: bool = True


def inflight(config: StageConfig, stage: int) -> float:
    """Microbatches whose activations a stage holds at the peak, by schedule family."""
    p, m = config.pp, config.microbatches
    rank = config.stage_rank[stage]
    if config.family == "gpipe":
        return m
    if config.family == "zb_h1":
        return min(p, m)
    if config.family in V_SHAPED:  # a rank's cap (v_shape.CAPS) over its two stages
        return min(p if config.family == "zb_v" else p / 2 + 1, m)
    if config.family == "interleaved":
        v = config.num_stages // p
        return min(2 * (p - rank - 1) + (v - 1) * p + 1, m * v) / v
    return min(p - rank + config.extra_inflight, m)


def build_units(graph: Graph, cost: CostModel, vocab: VocabLayers | None = None) -> list[Unit]:
    """The units in order with their costs; under `vocab_parallel` the vocabulary layers'
    ops stay in their units (for the IR's stage numbers) but cost them nothing, and the
    table is no unit's parameter: every rank carries its share of them (compiler/vocab.py)."""
    skipped = vocab.ops if vocab is not None else frozenset()
    units: list[Unit] = []
    by_name: dict[str, Unit] = {}
    kept: dict[str, set[str]] = {}  # unit -> the tensors its backward keeps
    for index, op in enumerate(graph.ops):
        top = op.scope.split(".", 1)[0] if op.scope else ""
        if top and top not in by_name:
            by_name[top] = Unit(top)
            units.append(by_name[top])
        unit = by_name[top] if top else (units[-1] if units else None)
        if unit is None:
            unit = by_name.setdefault("", Unit("(model)"))
            if unit not in units:
                units.append(unit)
        unit.ops.append(index)
        if index in skipped:
            continue
        t = cost.op_time(op)
        unit.fwd += t.fwd
        unit.bwd_input += t.bwd_input
        unit.bwd_weight += t.bwd_weight
        if op.kind == "matmul" and t.bwd_weight > 0:
            unit.bwd_deferred += t.bwd_weight
            unit.deferred_ops += 1
            unit.deferred_bytes += cost.local_bytes(op.outputs[0])
        unit.step += t.step
        unit.flops += t.flops
        unit.comm_bytes += cost.ring_traffic(op)  # ring attention's p2p over its axis
        if op.kind in COMMS:
            moved = cost.comm_bytes(op)
            if op.outputs[0] in cost.step_synced:
                unit.sync_bytes += moved
            else:
                unit.comm_bytes += moved
        if op.outputs[0] in cost.gathered:  # whole only while in use: not held per microbatch
            g = cost.gathered[op.outputs[0]]
            f32 = cost.local_numel(op.outputs[0]) * 4
            unit.gathered.append((f32 / 2 if g.dtype == "bf16" else f32, f32))
        for storage, size in cost.saved(op):  # what the backward keeps, each tensor once
            if storage not in kept.setdefault(unit.name, set()):
                kept[unit.name].add(storage)
                unit.act_bytes += size
        if cost.precision == "bf16" and op.kind == "matmul":
            # autocast casts each f32 weight to bf16 in every forward and keeps the copy for
            # the backward: two bytes per weight element for each microbatch in flight (a
            # gathered weight is gathered in bf16 and gathered again for the backward)
            unit.act_bytes += sum(cost.local_numel(n) * 2 for n in op.inputs
                                  if n in cost.param_like and not (
                                      n in cost.gathered and cost.gathered[n].dtype))
    owner = {}
    for unit in units:
        for i in unit.ops:
            for name in graph.ops[i].inputs:
                owner.setdefault(name, unit)
    whole = {g.param: g.output for g in cost.gathered.values()}
    for p in graph.params:
        if p.name in owner and (vocab is None or p.name not in vocab.params):
            owner[p.name].param_numel += cost.local_numel(p.name)
            owner[p.name].param_tensors += 1
            owner[p.name].grad_numel += cost.local_numel(whole.get(p.name, p.name))
    unit_of_op = {i: k for k, u in enumerate(units) for i in u.ops}
    last_reader: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        for name in op.inputs:
            last_reader[name] = max(last_reader.get(name, -1), unit_of_op[i])
    for k, unit in enumerate(units):
        for i in unit.ops:
            for name in graph.ops[i].outputs if i not in skipped else ():
                if last_reader.get(name, -1) > k and graph.values[name].type.is_float:
                    unit.out_bytes += cost.local_bytes(name)
    return units


def recompute_units(units: list[Unit], names: tuple[str, ...]) -> list[Unit]:
    """Units whose call is recomputed hold only their input and run their forward twice."""
    chosen = set(names) - {"all"}
    if not chosen:
        return units
    out = []
    for k, unit in enumerate(units):
        if unit.name.split("[", 1)[0] in chosen:
            held = units[k - 1].out_bytes if k > 0 else unit.out_bytes
            unit = replace(unit, act_bytes=held, bwd_input=unit.bwd_input + unit.fwd)
        out.append(unit)
    return out


def stage_memory(units: list[Unit], start: int, stop: int, config: StageConfig,
                 stage: int) -> float:
    static = sum(u.static_bytes(config.optimizer) for u in units[start:stop])
    static += working_set([g for u in units[start:stop] for g in u.gathered])
    whole = sum(u.act_bytes for u in units[start:stop])
    if "all" in config.recompute:  # inputs kept; one backward holds the stage's forward again
        held = units[start - 1].out_bytes if start > 0 else units[start].out_bytes
        return static + held * inflight(config, stage) + whole
    return static + whole * inflight(config, stage)


def _stage_time(units, start, stop, cost: CostModel, stage: int, config: StageConfig) -> float:
    """A stage's compute and send per microbatch, weighed by the share that visits it."""
    share = config.visits[stage] if config.visits else 1.0
    last = stage == config.num_stages - 1
    return share * (sum(u.time for u in units[start:stop]) + (0.0 if last else cost.p2p_time(
        units[stop - 1].out_bytes, config.stage_rank[stage], config.stage_rank[stage + 1])))


def _prefix(values) -> list[float]:
    out = [0.0]
    for v in values:
        out.append(out[-1] + v)
    return out


def _balance(units: list[Unit], config: StageConfig, cost: CostModel) -> list[tuple[int, int]]:
    """Contiguous split of the units into stages minimising the slowest one within memory;
    then, among splits no slower, the one whose slowest compute is least (a slow link or a
    heavy embedding can make the slowest stage; the others still get even shares of work)."""
    n, k = len(units), config.num_stages
    cap = config.memory / max(1, config.num_stages // config.pp)
    inf = float("inf")
    time = _prefix(u.time for u in units)
    static = _prefix(u.static_bytes(config.optimizer) + working_set(u.gathered) for u in units)
    acts = _prefix(u.act_bytes for u in units)
    # what stage s sends crosses the link from its rank to the next stage's; the last sends
    # nothing on
    if cost.hw.regions is not None:
        ranks = config.stage_rank
        send = [[cost.p2p_time(u.out_bytes, ranks[s], ranks[s + 1]) for u in units]
                for s in range(k - 1)]
    else:
        send = [[cost.p2p_time(u.out_bytes) for u in units]] * (k - 1)
    send.append([0.0] * n)
    recompute = "all" in config.recompute
    share = config.visits or (1.0,) * k

    def fits(s: int, j: int, i: int) -> bool:
        whole = acts[i] - acts[j]
        saved = (units[j - 1].out_bytes if j > 0 else units[0].out_bytes) \
            if recompute else whole
        extra = whole if recompute else 0.0  # the recomputing backward's working set
        return static[i] - static[j] + saved * inflight(config, s) + extra <= cap

    def split(cost_of, limit: float) -> tuple[float, list[tuple[int, int]]] | None:
        """The split minimising the largest cost_of(stage, j, i) with every stage's total
        within `limit`, or None."""
        best = [[inf] * (n + 1) for _ in range(k + 1)]
        cut = [[0] * (n + 1) for _ in range(k + 1)]
        best[0][0] = 0.0
        for s in range(1, k + 1):
            for i in range(s, n - (k - s) + 1):
                for j in range(s - 1, i):
                    if best[s - 1][j] == inf:
                        continue
                    total = (time[i] - time[j] + send[s - 1][i - 1]) * share[s - 1]
                    if total > limit:
                        continue
                    worst = max(best[s - 1][j], cost_of(s - 1, j, i, total))
                    if worst < best[s][i] and fits(s - 1, j, i):
                        best[s][i], cut[s][i] = worst, j
        if best[k][n] == inf:
            return None
        bounds, i = [], n
        for s in range(k, 0, -1):
            bounds.append((cut[s][i], i))
            i = cut[s][i]
        return best[k][n], list(reversed(bounds))

    found = split(lambda s, j, i, total: total, inf)
    if found is None:  # nothing fits: balance time alone, the plan reports the overflow
        return _balance(units, replace(config, memory=inf), cost)
    slowest = found[0]
    even = split(lambda s, j, i, total: (time[i] - time[j]) * share[s],
                 slowest * (1 + 1e-9) + 1e-15)
    return even[1] if even is not None else found[1]


def _explain(units, bounds, config, cost) -> list[str]:
    times = [_stage_time(units, a, b, cost, s, config) for s, (a, b) in enumerate(bounds)]
    slowest = max(times)
    lines = [] if not config.visits else [
        "stage times are weighed by the share of microbatches whose paths visit the stage: "
        + ", ".join(f"{v:.0%}" for v in config.visits)]
    for s in range(len(bounds) - 1):
        (a, b), (_, d) = bounds[s], bounds[s + 1]
        reasons = []
        if b - a > 1:  # move the last unit of stage s to stage s+1
            t = _stage_time(units, b - 1, d, cost, s + 1, config)
            mem = stage_memory(units, b - 1, d, config, s + 1)
            why = (f"stage {s + 1} would need {mem / 1e9:.2f} GB" if mem > config.memory
                   else f"stage {s + 1} would take {t * 1e3:.3f} ms")
            reasons.append(f"moving `{units[b - 1].name}` later: {why}")
        if d - b > 1:  # move the first unit of stage s+1 to stage s
            t = _stage_time(units, a, b + 1, cost, s, config)
            mem = stage_memory(units, a, b + 1, config, s)
            why = (f"stage {s} would need {mem / 1e9:.2f} GB" if mem > config.memory
                   else f"stage {s} would take {t * 1e3:.3f} ms")
            reasons.append(f"moving `{units[b].name}` earlier: {why}")
        lines.append(f"stage {s} | {s + 1} between `{units[b - 1].name}` and `{units[b].name}`"
                     f" (slowest stage {slowest * 1e3:.3f} ms): " + "; ".join(reasons or
                                                                           ["no other choice"]))
    return lines


def plan_partition(graph: Graph, config: StageConfig, cost: CostModel,
                   vocab: VocabLayers | None = None) -> Partition:
    units = recompute_units(build_units(graph, cost, vocab), config.recompute)
    if config.explicit is not None:
        position = {u.name: i for i, u in enumerate(units)}
        bounds = []
        for names in config.explicit:
            found = sorted(position[n] for n in names if n in position)
            bounds.append((found[0], found[-1] + 1))
        bounds[0] = (0, bounds[0][1])
        bounds[-1] = (bounds[-1][0], len(units))
        for s in range(1, len(bounds)):  # model-level work between named calls
            bounds[s] = (bounds[s - 1][1], bounds[s][1])
        explanation = ["stages are given explicitly in the spec"]
    else:
        bounds = _balance(units, config, cost)
        explanation = _explain(units, bounds, config, cost)
    feasible = all(stage_memory(units, a, b, config, s) <= config.memory
                   for s, (a, b) in enumerate(bounds))
    return Partition(units, bounds, explanation, feasible)


def apply_partition(graph: Graph, part: Partition) -> Graph:
    """Stage numbers on every value: results on their op's stage, inputs and parameters on
    the first stage that reads them.

    A parameter read on several stages (a tied embedding) is kept on each of them: the ops
    that pass it along (gradient sync, gather) are repeated per stage, so no stage ever
    receives a parameter from another.
    """
    stage_of_op = {i: s for s, (a, b) in enumerate(part.bounds)
                   for unit in part.units[a:b] for i in unit.ops}
    sources = set(graph.inputs) | {p.name for p in graph.params}
    carriers = {}  # output of a comm op on a parameter (chain) -> that op's index
    for i, op in enumerate(graph.ops):
        if op.kind in COMMS and (op.inputs[0] in sources or op.inputs[0] in carriers):
            carriers[op.outputs[0]] = i
    readers: dict[str, set[int]] = {}
    for i, op in enumerate(graph.ops):
        if i not in carriers.values():
            for name in op.inputs:
                readers.setdefault(name, set()).add(stage_of_op[i])
    # stages each carrier must exist on: those of its (transitive) non-carrier readers
    needed: dict[str, set[int]] = {}
    for out in reversed(list(carriers)):
        op = graph.ops[carriers[out]]
        needed[out] = set(readers.get(out, set())) | set().union(
            *(needed.get(o, set()) for o in carriers if graph.ops[carriers[o]].inputs[0] == out))
    values = dict(graph.values)
    ops: list[Op] = []
    renamed: dict[tuple[str, int], str] = {}  # (carrier output, stage) -> its copy there
    counter = max((int(n) for n in values if n.isdigit()), default=0) + 1
    for i, op in enumerate(graph.ops):
        out = op.outputs[0] if op.outputs else None
        if out in carriers and carriers[out] == i:
            for s in sorted(needed.get(out, {stage_of_op[i]})):
                src = renamed.get((op.inputs[0], s), op.inputs[0])
                name = out if s == min(needed.get(out, {s})) else str(counter)
                if name != out:
                    counter += 1
                values[name] = replace(values[out], name=name, stage=s)
                renamed[(out, s)] = name
                ops.append(replace(op, inputs=(src,), outputs=(name,)))
            continue
        s = stage_of_op[i]
        inputs = tuple(renamed.get((n, s), n) for n in op.inputs)
        ops.append(replace(op, inputs=inputs))
        for name in op.outputs:
            values[name] = replace(values[name], stage=s)
    first: dict[str, int] = {}
    for op in ops:
        stage = values[op.outputs[0]].stage
        for name in op.inputs:
            if name in sources:
                first[name] = min(first.get(name, stage), stage)
    for name in sources:
        values[name] = replace(values[name], stage=first.get(name, 0))
    return graph.with_(values=values, ops=tuple(ops))
