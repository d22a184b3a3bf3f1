"""A plan: the partitioned graph, its stages and their costs, the validated schedule and what
the simulator predicts for it (step time, bubble, memory per rank)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dsl.diagnostics import Diagnostic, ParcError
from ..dsl.spec import ScheduleSpec, Spec
from .cost import CostModel, optimizer_state_bytes, optimizer_time
from .gathered import working_set
from .ir import Graph
from .passes import lower
from .passes.fuse import fuse
from .passes.partition import Partition, StageConfig, Unit, apply_partition, plan_partition
from .schedules import FIXED, SPLIT, Schedule, build, chunks_per_rank, validated
from .schedules.one_f_one_b import one_f_one_b
from .schedules.schedule import Action
from .schedules.simulate import Simulation, simulate
from .schedules.skip_paths import visit_shares
from .schedules.validate import ScheduleError, check_posting, runnable_order, validate
from .schedules.vocab import runnable_vocab_order, searched_vocab_order
from .skip_check import check_skips
from .verify import verify as verify_graph
from .vocab import VOCAB_PASSES, VocabWork, vocab_layers, vocab_work

# Python work of a split backward, in units of the hardware's per-op overhead (measured on CPU:
# walking the autograd graph costs about half an op's dispatch per node, an autograd call per
# deferred matmul about four)
SPLIT_WALK_OVERHEAD = 0.5
SPLIT_CALL_OVERHEAD = 4.0


@dataclass
class StageInfo:
    index: int
    rank: int
    units: list[str]
    fwd: float
    bwd_input: float
    bwd_weight: float
    step: float
    param_numel: float
    act_bytes: float  # saved per microbatch
    send_bytes: float  # activations sent to the next stage per microbatch
    flops: float = 0.0
    param_tensors: int = 0
    bwd_deferred: float = 0.0  # the matmuls' weight gradients: a split W
    deferred_ops: int = 0
    num_ops: int = 0
    deferred_bytes: float = 0.0  # gradients a split B keeps for its W, per microbatch
    grad_numel: float = 0.0  # gradient elements held over a step (a gathered one's whole)
    gathered: list[tuple[float, float]] = field(default_factory=list)  # partition.Unit's


@dataclass
class RankMemory:
    params: float
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations


@dataclass
class Plan:
    spec: Spec
    graph: Graph
    stages: list[StageInfo]
    partition: Partition
    schedule: Schedule
    simulation: Simulation
    memory: list[RankMemory]
    predicted_step_s: float
    shared_params: list[str] = field(default_factory=list)  # read on more than one stage
    vocab: VocabWork | None = None  # `vocab_parallel pp`: each rank's share of the vocabulary
    posting: tuple | None = None  # the posting order simulated (with the vocabulary passes)

    @property
    def fits(self) -> bool:
        return all(m.total <= self.spec.parallel.hardware.memory for m in self.memory)


def stage_config(spec: Spec, family: str | None = None, virtual: int | None = None,
                 microbatches: int | None = None) -> StageConfig:
    par, train = spec.parallel, spec.train
    pp = par.axis_size("pp")
    fam = family or par.schedule.name
    v = virtual if virtual is not None else chunks_per_rank(fam, par.schedule.virtual)
    explicit = par.stages if isinstance(par.stages, tuple) and v == par.schedule.virtual \
        else None
    m = microbatches or train.microbatches
    visits = None
    if fam == "skip" and par.schedule.given is not None:
        paths = par.schedule.given
        visits = tuple(sum(s in p for p in paths) / len(paths) for s in range(pp))
    elif fam == "skip":
        ratio = par.schedule.ratio if par.schedule.name == "skip" else 0.25
        visits = visit_shares(pp, m, ratio)
    extra = int(par.vocab_parallel is not None and fam == "1f1b")
    return StageConfig(pp * v, pp, fam, m, par.hardware.memory, train.optimizer.name,
                       explicit, par.recompute, visits, extra_inflight=extra)


@dataclass
class Prediction:
    """What the simulator predicts for stages cut from a list of units."""

    stages: list[StageInfo]
    schedule: Schedule
    simulation: Simulation
    memory: list[RankMemory]
    step_s: float
    posting: tuple | None = None


def predict(units: list[Unit], bounds: list[tuple[int, int]], config: StageConfig,
            cost: CostModel, optimizer: str, ratio: float = 0.25, seed: int = 0,
            schedule_spec: ScheduleSpec | None = None,
            vocab: VocabWork | None = None) -> Prediction:
    """Build the family's schedule over these stages, validate it and simulate it; with
    `vocab`, its passes placed in the posting order (schedules/vocab.py) and timed too."""
    pp = config.pp
    stage_rank = config.stage_rank
    stages = []
    for s, (a, b) in enumerate(bounds):
        group = units[a:b]
        stages.append(StageInfo(
            s, stage_rank[s], [u.name for u in group], sum(u.fwd for u in group),
            sum(u.bwd_input for u in group), sum(u.bwd_weight for u in group),
            sum(u.step for u in group), sum(u.param_numel for u in group),
            sum(u.act_bytes for u in group), group[-1].out_bytes, sum(u.flops for u in group),
            sum(u.param_tensors for u in group), sum(u.bwd_deferred for u in group),
            sum(u.deferred_ops for u in group), sum(len(u.ops) for u in group),
            sum(u.deferred_bytes for u in group), sum(u.grad_numel for u in group),
            [g for u in group for g in u.gathered]))
    recompute = "all" in config.recompute
    split = config.family in SPLIT
    times = {}
    rerun = bool([r for r in config.recompute if r != "none"])
    overhead = cost.hw.op_overhead
    for i, st in enumerate(stages):
        extra = st.fwd if recompute else 0.0
        times[("F", i)] = st.fwd
        if not split:
            times[("B", i)] = st.bwd_input + st.bwd_weight + extra
        elif i == 0 and rerun:  # token ids in: B has nothing to do; W is one whole backward
            times[("B", i)] = 0.0
            times[("W", i)] = st.bwd_input + st.bwd_weight + extra
        elif i == 0:  # token ids in: B is one whole backward, W has nothing left
            times[("B", i)] = st.bwd_input + st.bwd_weight
            times[("W", i)] = 0.0
        elif rerun:
            # under recomputation W is one backward into the parameters, which traverses the
            # graph again and recomputes its forward again (runtime/executor.py)
            times[("B", i)] = st.bwd_input + extra
            times[("W", i)] = st.bwd_input + st.bwd_weight + extra
        else:
            # B: input gradients and the small weight gradients, after walking the autograd
            # graph for its weight nodes; W: the matmuls' weight gradients, one autograd call
            # each (runtime/split_backward.py)
            times[("B", i)] = (st.bwd_input + st.bwd_weight - st.bwd_deferred +
                               SPLIT_WALK_OVERHEAD * overhead * st.num_ops)
            times[("W", i)] = st.bwd_deferred + SPLIT_CALL_OVERHEAD * overhead * st.deferred_ops

    def duration(action: Action) -> float:
        if action.op in VOCAB_PASSES:
            return vocab.duration(action.op)
        return times[(action.op, action.stage)]

    def p2p(action: Action, src: int, dst: int) -> float:
        """A forward sends its stage's output; a backward the gradient of its stage's input,
        which is what the stage before it sends (a skipped stage passes on what it takes)."""
        sender = action.stage if action.op == "F" else action.stage - 1
        return cost.p2p_time(stages[sender].send_bytes, src, dst)

    virtual = config.num_stages // pp
    if config.family in FIXED:
        schedule = validated(config.family, pp, config.microbatches, virtual)
    else:
        sched = schedule_spec or ScheduleSpec("skip", ratio=ratio, seed=seed)
        schedule = build(config.family, pp, config.microbatches, virtual=virtual, ratio=ratio,
                         seed=seed, cost=duration, p2p=p2p, paths=sched.given,
                         search=sched.paths == "search", reorder=sched.reorder)
        validate(schedule)

    def saved(stage: int) -> float:
        # a split B also keeps the gradients its W needs (counted here from F to W)
        kept = stages[stage].deferred_bytes if split and stage > 0 and not rerun else 0.0
        if recompute:
            a = bounds[stage][0]
            return (units[a - 1].out_bytes if a > 0 else units[0].out_bytes) + kept
        return stages[stage].act_bytes + kept

    order = runnable_order(schedule)
    if vocab is not None:
        schedule, order = vocab_placement(schedule, order, duration, p2p, saved)
    simulation = simulate(schedule, duration, p2p, saved, order=order)
    memory = []
    for r in range(pp):
        mine = [st for st in stages if st.rank == r]
        numel = sum(st.param_numel for st in mine)
        acts = simulation.peak_activation_bytes[r]
        if recompute:  # a backward runs its stage's forward again and holds all of it at once
            acts += max((st.act_bytes for st in mine), default=0.0)
        # whole gathered parameters in use (ZeRO): one stage runs at a time
        acts += max((working_set(st.gathered) for st in mine), default=0.0)
        grads = sum(st.grad_numel for st in mine)
        if vocab is not None:  # the rank's slice of the table; one logits slice at a time
            numel += vocab.param_numel
            grads += vocab.param_numel
            acts += vocab.transient_bytes
        memory.append(RankMemory(numel * 4, grads * 4, numel * optimizer_state_bytes(optimizer),
                                 acts))
    extra = (vocab.param_numel, vocab.param_tensors, vocab.step) if vocab else (0.0, 0, 0.0)
    step_s = max((rank_end(simulation, stages, r) + extra[2] +
                  optimizer_time(cost.hw, optimizer,
                                 sum(st.param_numel for st in stages if st.rank == r) + extra[0],
                                 sum(st.param_tensors for st in stages if st.rank == r) +
                                 extra[1])
                  for r in range(pp)), default=simulation.step_time)
    return Prediction(stages, schedule, simulation, memory, max(step_s, simulation.step_time),
                      order)


def vocab_placement(schedule: Schedule, order, duration, p2p, saved) -> tuple[Schedule, tuple]:
    """The schedule and posting order with the vocabulary passes that simulate fastest:
    E and G beside their stages' passes or all at the step's ends, each pass joined after
    or before the action that spans its anchor, or placed one by one by simulation; for
    1F1B also over the order with one more warm-up forward per rank."""
    schedules = [schedule]
    if schedule.family == "1f1b" and schedule.num_microbatches > schedule.num_ranks:
        more = one_f_one_b(schedule.num_ranks, schedule.num_microbatches, extra_warmup=1)
        validate(more)
        schedules.append(more)
    found = []
    for sched in schedules:
        plain = order if sched is schedule else runnable_order(sched)
        base = simulate(sched, duration, p2p, saved, order=plain)
        found += [(sched, runnable_vocab_order(sched, plain, base.events, check_posting, ends,
                                               early))
                  for ends in (False, True) for early in (False, True)]
        found.append((sched, searched_vocab_order(sched, plain, duration, p2p, check_posting,
                                                  simulate)))
    return min(found, key=lambda c: simulate(c[0], duration, p2p, saved,
                                             order=c[1]).step_time)


def rank_end(simulation: Simulation, stages: list[StageInfo], rank: int) -> float:
    """When a rank's gradients are synced: each stage's all-reduce starts with its last
    backward pass (the runtime overlaps them, runtime/sync.py) and they queue on the link;
    what runs past the rank's last action is exposed."""
    last: dict[int, float] = {}  # stage -> start of its last backward pass
    end = 0.0
    for e in simulation.events:
        if e.rank == rank:
            end = max(end, e.end)
            if e.action.op in ("B", "W"):
                last[e.action.stage] = e.start
    queue = 0.0
    for stage in sorted(last, key=last.get):
        queue = max(queue, last[stage]) + stages[stage].step
    unvisited = sum(st.step for st in stages if st.rank == rank and st.index not in last)
    return max(end, queue) + unvisited


def planned_graph(spec: Spec, after: str, verify: bool = False) -> Graph:
    """The spec's graph after `partition` (stages assigned by the plan) or `fuse` (its
    fusion groups as the program runs them)."""
    assert after in ("partition", "fuse"), after
    graph = make_plan(spec, graph=lower(spec, "boxing", verify)).graph
    if after == "fuse":
        graph = fuse(graph, spec.parallel.recompute)
    if verify:
        verify_graph(graph)
    return graph


def make_plan(spec: Spec, family: str | None = None, virtual: int | None = None,
              graph: Graph | None = None) -> Plan:
    """Partition, schedule and simulate a checked spec (optionally with another family)."""
    assert spec.parallel is not None and spec.train is not None
    par, train = spec.parallel, spec.train
    graph = graph or lower(spec, "boxing")
    cost = CostModel(graph, par.hardware, train.precision, par.kernel_backend == "triton")
    config = stage_config(spec, family, virtual)
    layers = vocab_layers(spec, graph)
    vocab = vocab_work(layers, graph, cost) if layers is not None else None
    part = plan_partition(graph, config, cost, layers)
    graph = apply_partition(graph, part)
    sched = par.schedule
    ratio = sched.ratio if sched.name == "skip" else 0.25  # --compare on a non-skip spec
    try:
        pred = predict(part.units, part.bounds, config, cost, train.optimizer.name, ratio,
                       sched.seed, sched if sched.name == "skip" else None, vocab)
    except ScheduleError as exc:
        if vocab is None:
            raise
        raise ParcError([Diagnostic("E356", "`vocab_parallel pp`: no placement of the "
                                    f"vocabulary passes runs under NCCL's rules: {exc}",
                                    par.vocab_span)], spec.sources) from None
    check_skips(spec, graph, pred.schedule)
    readers: dict[str, set[int]] = {}
    for op in graph.ops:
        stage = graph.values[op.outputs[0]].stage
        for name in op.inputs:
            readers.setdefault(name, set()).add(stage)
    shared = [p.name for p in graph.params if len(readers.get(p.name, ())) > 1
              and (layers is None or p.name not in layers.params)]
    return Plan(spec, graph, pred.stages, part, pred.schedule, pred.simulation, pred.memory,
                pred.step_s, shared, vocab, pred.posting)
