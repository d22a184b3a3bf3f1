"""What the checker produces: frozen configs for the model, hardware, training and parallelism."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..ops.sbp import NdSbp
from ..ops.types import TensorT
from .ast import Span


def _span():
    return field(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class ParamInfo:
    name: str  # scoped: block[3].attn.q.w
    value: int  # the tensor id it binds
    type: TensorT
    init: tuple[str, tuple[float, ...]]  # ("normal", (0.02,)), ("zeros", ()), ...
    span: Span | None = _span()


@dataclass(frozen=True)
class InputInfo:
    name: str
    value: int
    type: TensorT
    next_of: str | None = None  # `= next(tokens)`: tokens shifted by one position
    span: Span | None = _span()


@dataclass(frozen=True)
class OpInfo:
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: tuple[tuple[str, object], ...]
    scope: str  # the call scope path, "" at model level
    span: Span | None = _span()


@dataclass(frozen=True)
class TopScope:
    """A call made directly in the model body: the unit stages are made of."""

    name: str  # embed, block[3]
    base: str  # embed, block
    index: int | None
    span: Span | None = _span()


@dataclass
class ModelSpec:
    name: str
    hyper: dict[str, object]
    inputs: list[InputInfo]
    params: list[ParamInfo]
    ops: list[OpInfo]
    values: dict[int, TensorT]  # every tensor id -> its type
    outputs: dict[str, int]
    scopes: list[TopScope]
    span: Span | None = None
    output_spans: dict[str, Span | None] = field(default_factory=dict)

    @property
    def numbers(self) -> dict[str, int | float | bool]:
        """The hyperparameters that are plain numbers, as a checkpoint records them."""
        return {k: v for k, v in self.hyper.items() if isinstance(v, int | float | bool)}

    @property
    def num_layers(self) -> int:
        """The count of the most repeated indexed top-level call (the transformer blocks)."""
        counts: dict[str, int] = {}
        for scope in self.scopes:
            if scope.index is not None:
                counts[scope.base] = counts.get(scope.base, 0) + 1
        return max(counts.values(), default=0)


@dataclass(frozen=True)
class HardwareSpec:
    name: str
    device: str  # "cpu" or "cuda"
    devices: int
    devices_per_node: int
    memory: float  # bytes per device
    flops_f32: float  # FLOP/s per device
    flops_bf16: float
    mem_bw: float  # bytes/s
    intra_bw: float  # bytes/s per direction
    intra_latency: float  # seconds
    inter_bw: float | None
    inter_latency: float | None
    efficiency: float
    span: Span | None = _span()
    op_overhead: float = 0.0  # seconds each op costs beyond its arithmetic (launch, dispatch)
    # heterogeneous networks: the region of each node, and per pair of regions (0, 1), (0, 2),
    # ..., (1, 2), ... the bandwidth and latency of one device's transfer between them
    regions: tuple[int, ...] | None = None
    region_bw: tuple[float, ...] = ()
    region_latency: tuple[float, ...] = ()

    @property
    def num_nodes(self) -> int:
        return self.devices // self.devices_per_node

    def node_of(self, device: int) -> int:
        return device // self.devices_per_node

    def link(self, a: int, b: int) -> tuple[float, float]:
        """(bandwidth, latency) of one device's point-to-point transfer from device a to b."""
        na, nb = self.node_of(a), self.node_of(b)
        if na == nb or self.inter_bw is None:
            return self.intra_bw, self.intra_latency
        latency = self.inter_latency or self.intra_latency
        if self.regions is None or self.regions[na] == self.regions[nb]:
            return self.inter_bw, latency
        i, j = sorted((self.regions[na], self.regions[nb]))
        count = max(self.regions) + 1
        pair = i * count - i * (i + 1) // 2 + (j - i - 1)
        return self.region_bw[pair], self.region_latency[pair]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # "adamw" or "sgd"
    lr: float
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass(frozen=True)
class DataSpec:
    kind: str  # "synthetic" or "tokens"
    seed: int = 0
    path: str | None = None
    dtype: str = "u16"


@dataclass(frozen=True)
class LrSchedule:
    """Warmup from lr/warmup to lr, then decay to min_lr over the rest of `decay_steps`."""

    kind: str = "constant"  # constant, cosine or linear
    warmup: int = 0
    min_lr: float = 0.0
    decay_steps: int | None = None  # None: the train block's steps


@dataclass(frozen=True)
class TrainSpec:
    batch: int
    microbatches: int = 1
    steps: int = 1
    seed: int = 0
    optimizer: OptimizerSpec = OptimizerSpec("adamw", 3e-4)
    data: DataSpec = DataSpec("synthetic")
    precision: str = "f32"
    grad_clip: float | None = None
    init: str | None = None  # a weights file (parc names or a Hugging Face layout)
    checkpoint_every: int | None = None
    checkpoint_dir: str | None = None  # as written; resolved next to the spec by the checker
    lr_schedule: LrSchedule = LrSchedule()
    eval_every: int | None = None  # evaluate every N steps on held-out data
    eval_batches: int = 4
    eval_data: DataSpec | None = None  # None: the last tenth of the token file (held out)
    # parameters without weight decay: glob patterns, or None for the usual ones (norm
    # weights, biases and embedding tables)
    no_decay: tuple[str, ...] | None = None
    span: Span | None = _span()
    # where each setting is written (`init`, `data`, `checkpoint`, ...), for later diagnostics
    spans: dict[str, Span] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def microbatch_size(self) -> int:
        return self.batch // self.microbatches


@dataclass(frozen=True)
class ScheduleSpec:
    name: str  # gpipe, 1f1b, interleaved, zb_h1, zb_v, v_half, skip
    virtual: int = 1  # stages per pp rank: interleaved's `virtual`, 2 for zb_v and v_half
    ratio: float = 0.0
    seed: int = 0
    span: Span | None = _span()
    # skip: `paths = search` finds fast paths, `greedy` takes the least skipped stages,
    # `given` runs the paths in `given` (written in the spec, or the plan's own in the
    # contract's reference); `reorder` lets the search swap two adjacent stages in a path
    paths: str = "search"
    reorder: bool = False
    given: tuple[tuple[int, ...], ...] | None = None


def skip_count(num_stages: int, m: int, ratio: float) -> int:
    """A skip schedule's skips over all microbatches: `ratio` of the middle stages' visits,
    rounded."""
    return math.floor(ratio * max(0, num_stages - 2) * m + 0.5)


@dataclass(frozen=True)
class ParallelSpec:
    hardware: HardwareSpec
    mesh: tuple[tuple[str, int], ...]  # (axis, size) outer to inner; includes pp when given
    sbp: dict[str, NdSbp]  # input and parameter names -> their SBP (every name present)
    stages: str | tuple[tuple[str, ...], ...]  # "auto" or top-level scope names per stage
    schedule: ScheduleSpec
    recompute: tuple[str, ...]  # () none, ("all",) every stage, else def names
    span: Span | None = _span()
    auto: bool = False  # `auto`: parc tune chooses; the fields hold plain data parallelism
    kernels: str | None = None  # "triton" or "torch"; None: Triton on CUDA, torch on CPU
    compile: bool = False  # each stage module runs under torch.compile
    sequence_parallel: str | None = None  # the axis that splits the sequence between TP regions
    # `vocab_parallel pp`: the embedding and the output layer (+ loss) split by vocabulary
    # over every pipeline rank (Yeung et al. 2024); planned and simulated, not yet run
    vocab_parallel: str | None = None
    vocab_span: Span | None = _span()  # the setting's line, for the plan's refusals
    context_parallel: str | None = None  # the axis that splits the sequence, attention by ring
    auto_sbp: tuple[str, ...] = ()  # parameters `auto` leaves to the sbp search (their `sbp`: B)

    @property
    def kernel_backend(self) -> str:
        if self.kernels is not None:
            return self.kernels
        return "triton" if self.hardware.device == "cuda" else "torch"

    def axis_size(self, axis: str) -> int:
        return dict(self.mesh).get(axis, 1)

    @property
    def num_stages(self) -> int:
        return self.axis_size("pp") * self.schedule.virtual


@dataclass
class Spec:
    """A fully checked .par file."""

    file: str
    model: ModelSpec | None
    train: TrainSpec | None
    parallel: ParallelSpec | None
    hardware: dict[str, HardwareSpec]
    sources: dict[str, str]
