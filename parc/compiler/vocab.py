"""Vocabulary parallelism over the pipeline ranks (`vocab_parallel pp`; Yeung et al. 2024).

The embedding lookup and the output layer with its cross-entropy are found in the graph and
taken out of the first and last stages: each of the pp ranks owns vocab / pp rows of the
table (a tied head shares the slice) and runs its share of four passes per microbatch:

- E, embedding forward: look up the tokens that fall in its rows (zeros elsewhere) and sum
  the partial embeddings onto the first stage's rank (a reduce of [batch, seq, d]);
- O, output forward and backward together (the loss's gradient is known when it is
  computed): the last stage's hidden states are broadcast, each rank computes its logits
  slice, its local max, exp-sum and target logit are all-reduced over the pp group, then
  softmax-minus-one-hot of the slice times the slice's rows is summed onto the last stage's
  rank as the hidden states' gradient; the slice's own gradient stays local;
- G, embedding backward: the first stage's gradient of the embeddings is broadcast and each
  rank adds its tokens' rows into its slice's gradient.

This module says what they are and what they cost; schedules/vocab.py places them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dsl.diagnostics import Diagnostic, ParcError
from ..dsl.spec import Spec
from ..ops.comm import COMMS, ring_time
from .cost import CostModel, optimizer_state_bytes
from .ir import Graph

VOCAB_PASSES = ("E", "O", "G")


@dataclass(frozen=True, kw_only=True)
class VocabLayers:
    """The vocabulary layers of a graph, by op index and value name."""

    table: str  # the embedding's parameter, [vocab, d]
    head: str  # the output layer's parameter: the table when tied, else [d, vocab]
    vocab: int
    embed_ops: tuple[int, ...]  # the lookup
    head_ops: tuple[int, ...]  # the head's transpose (if tied), matmul and cross-entropy
    param_ops: tuple[int, ...]  # communication on the two parameters (gradient sync)
    embedded: str  # the lookup's result, [batch, seq, d]
    hidden: str  # the output layer's input, [batch, seq, d]
    rows: str  # the cross-entropy's targets, [batch, seq]

    @property
    def ops(self) -> frozenset[int]:
        return frozenset(self.embed_ops + self.head_ops + self.param_ops)

    @property
    def params(self) -> frozenset[str]:
        return frozenset({self.table, self.head})


def _origin(graph: Graph, name: str, producers: dict) -> tuple[str, list[int]]:
    """The value a chain of communication ops starts from, and the chain's op indices."""
    index = {id(op): i for i, op in enumerate(graph.ops)}
    chain = []
    while name in producers and producers[name].kind in COMMS:
        chain.append(index[id(producers[name])])
        name = producers[name].inputs[0]
    return name, chain


def find_vocab_layers(graph: Graph) -> VocabLayers | str:
    """The model's embedding and output layer, or why they cannot be split by vocabulary."""
    producers = graph.producers()
    params = {p.name for p in graph.params}
    index = {id(op): i for i, op in enumerate(graph.ops)}
    lookups = [i for i, op in enumerate(graph.ops) if op.kind == "embedding"]
    losses = [i for i, op in enumerate(graph.ops) if op.kind == "cross_entropy"]
    if len(lookups) != 1 or len(losses) != 1:
        return (f"the model needs one embedding lookup and one cross-entropy, it has "
                f"{len(lookups)} and {len(losses)}")
    lookup, loss = graph.ops[lookups[0]], graph.ops[losses[0]]
    table, table_chain = _origin(graph, lookup.inputs[1], producers)
    if table not in params:
        return "the embedding's table is not a parameter"
    matmul = producers.get(loss.inputs[0])
    if matmul is None or matmul.kind != "matmul":
        return "the cross-entropy's logits are not the result of a matmul (an output layer)"
    weight = matmul.inputs[1]
    head_ops = [index[id(matmul)], losses[0]]
    w = producers.get(weight)
    if w is not None and w.kind == "transpose":
        head, head_chain = _origin(graph, w.inputs[0], producers)
        head_ops.insert(0, index[id(w)])
        rows_dim = 0
    else:
        head, head_chain = _origin(graph, weight, producers)
        rows_dim = 1
    if head not in params:
        return "the output layer's weight is not a parameter"
    vocab = graph.values[loss.inputs[0]].type.shape[-1].as_int()
    head_vocab = graph.values[head].type.shape[rows_dim].as_int()
    if graph.values[table].type.shape[0].as_int() != vocab or head_vocab != vocab:
        return "the embedding's table and the output layer have different vocabularies"
    for name in (table, head, loss.inputs[0], lookup.outputs[0]):
        sbp = graph.values[name].sbp
        split = [a for a in graph.sbp_axes if sbp is not None and sbp.on(a).kind != "B"
                 and a != "dp" and not (name in (loss.inputs[0], lookup.outputs[0]) and
                                        sbp.on(a).kind == "S" and sbp.on(a).dim == 0)]
        if split:
            return (f"`{name}` is {sbp.on(split[0])}@{split[0]}; only a batch split may "
                    "join a vocabulary split over the pipeline")
    consumers = graph.consumers()
    if len(consumers.get(loss.inputs[0], [])) != 1:
        return "the logits are read by more than the cross-entropy"
    if loss.outputs[0] not in {value for _, value in graph.outputs}:
        return "the cross-entropy is not the model's output"
    return VocabLayers(table=table, head=head, vocab=vocab, embed_ops=(lookups[0],),
                       head_ops=tuple(head_ops),
                       param_ops=tuple(sorted(set(table_chain + head_chain))),
                       embedded=lookup.outputs[0], hidden=matmul.inputs[0],
                       rows=loss.inputs[1])


def vocab_layers(spec: Spec, graph: Graph) -> VocabLayers | None:
    """The layers `vocab_parallel` splits (None without it); a located error where they
    cannot be split: none found, or a vocabulary that does not divide by pp."""
    par = spec.parallel
    if par is None or par.vocab_parallel is None:
        return None
    found = find_vocab_layers(graph)
    pp = par.axis_size("pp")
    if isinstance(found, str):
        raise ParcError([Diagnostic("E356", f"`vocab_parallel pp`: {found}", par.vocab_span,
                                    help="vocabulary parallelism splits a model's embedding "
                                    "table and its output layer (as std.gpt's embed and "
                                    "lm_loss)")], spec.sources)
    if found.vocab % pp:
        raise ParcError([Diagnostic(
            "E356", f"`vocab_parallel pp`: the vocabulary ({found.vocab}) does not divide by "
            f"pp = {pp}", par.vocab_span,
            help=f"pad the vocabulary to a multiple of {pp} (Megatron-LM pads to a multiple "
            "of 128)")], spec.sources)
    return found


@dataclass(frozen=True, kw_only=True)
class VocabWork:
    """What each pipeline rank spends on the vocabulary, per microbatch unless said."""

    layers: VocabLayers
    pp: int
    embed_fwd: float  # E: lookup of the slice and the reduce onto the first stage
    output: float  # O: broadcast, logits slice, three all-reduced numbers per row, grad reduce
    embed_bwd: float  # G: broadcast of the gradient and the slice's scatter-add
    step: float  # the slices' gradient sync over the other axes, once per step
    param_numel: float  # elements of the slices on one rank
    param_tensors: int
    transient_bytes: float  # the output pass's logits slice and its softmax, one at a time
    flops: float  # per rank, per microbatch

    def duration(self, op: str) -> float:
        return {"E": self.embed_fwd, "O": self.output, "G": self.embed_bwd}[op]

    def static_bytes(self, optimizer: str) -> float:
        return self.param_numel * (8 + optimizer_state_bytes(optimizer))


def _rooted(size: float, n: int, bandwidth: float, latency: float) -> float:
    """A pipelined broadcast or reduce of `size` bytes over n ranks."""
    return 0.0 if n <= 1 else (n - 1) * latency + size / bandwidth


def vocab_work(layers: VocabLayers, graph: Graph, cost: CostModel) -> VocabWork:
    pp = graph.axis_size("pp")
    bandwidth, latency = cost.axis_link("pp")
    act = cost.local_bytes(layers.embedded)  # [batch, seq, d] on one rank
    hidden = cost.local_bytes(layers.hidden)
    rows = cost.local_numel(layers.rows) * 4  # one f32 per row
    times = {i: cost.op_time(graph.ops[i]) for i in layers.embed_ops + layers.head_ops}
    lookup = times[layers.embed_ops[0]]
    head_compute = sum(t.fwd + t.bwd_input + t.bwd_weight for i, t in times.items()
                       if i in layers.head_ops) / pp
    reduce_ar = 2 * ring_time("all_reduce", rows, pp, bandwidth, latency)  # max; exp-sum+target
    output = (_rooted(hidden, pp, bandwidth, latency) + head_compute + reduce_ar +
              _rooted(hidden, pp, bandwidth, latency))
    step = sum(cost.op_time(graph.ops[i]).step for i in layers.param_ops) / pp
    numel = sum(cost.local_numel(p) for p in layers.params) / pp
    logits = graph.ops[layers.head_ops[-1]].inputs[0]
    flops = (lookup.flops + sum(t.flops for i, t in times.items() if i in layers.head_ops)
             / pp)
    return VocabWork(layers=layers, pp=pp,
                     embed_fwd=lookup.fwd + _rooted(act, pp, bandwidth, latency),
                     output=output,
                     embed_bwd=_rooted(act, pp, bandwidth, latency) + lookup.bwd_weight,
                     step=step, param_numel=numel, param_tensors=len(layers.params),
                     transient_bytes=2 * cost.local_bytes(logits) / pp, flops=flops)


def refuse_to_run(spec: Spec) -> None:
    """The runtime does not run the vocabulary passes yet: a program of such a plan is
    refused at the setting (`parc check`, `compile` and `run`), while `parc plan` and `parc
    schedule` show its effect."""
    par = spec.parallel
    if par is not None and par.vocab_parallel is not None:
        raise ParcError([Diagnostic(
            "E357", "`vocab_parallel pp` is planned and simulated (`parc plan`, `parc "
            "schedule`), but the runtime does not run the vocabulary passes yet",
            par.vocab_span, help="leave out `vocab_parallel` to compile or run this plan")],
            spec.sources)
