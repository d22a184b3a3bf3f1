"""Seeded generator of whole plans (model, hardware, train, parallel) for the contract sweep.

Plan `i` of seed `s` depends on (s, i) alone, so a failing plan is reproduced by its name.
Models: the standard GPT (tied head), the standard LLaMA (grouped-query attention, untied
head), and models built from the generator's own defs, with names of its own, that use every
op of the catalog. Meshes of 1, 2, 4 and 8 devices with one to three axes (size-1 axes
included); SBP rules on inputs and parameters drawn from: batch splits over one or two axes,
Megatron's tensor-parallel layout, vocabulary-parallel embedding and head, ZeRO on any subset of
weights, random splits of any dim over any axis, and context parallelism (`context_parallel`,
ring attention) on an axis nothing else splits; every schedule family; recompute; bf16;
gradient clipping; AdamW or SGD. `parc tune`'s own candidates for a generated spec join too.
Some plans are meant to be refused by `parc check` (sizes that do not divide): the sweep holds
those to a located diagnostic instead of the contract.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

AXIS_NAMES = ["dp", "tp", "data", "model", "x", "ep"]
WORDS = ["up", "mid", "gate", "down", "out", "mix", "proj", "wide", "thin", "fold", "lift", "tap",
         "core", "pipe", "knot", "vent", "cell", "edge", "hub", "ray", "seam", "coil", "drum"]
ACTIVATIONS = ["gelu", "silu", "relu", "tanh", "sigmoid"]


@dataclass(kw_only=True, frozen=True)
class GeneratedPlan:
    name: str
    text: str
    devices: int
    model: str  # gpt | llama | defs
    family: str  # schedule family
    mesh: str  # "pp=2 x dp=2"
    sbp: tuple[str, ...]  # kinds of rules: batch, batch2, tp, vocab, zero, random; cp
    precision: str
    recompute: str
    source: str = "random"  # random | tune

    @property
    def kind(self) -> str:
        return "+".join(self.sbp) or "none"


@dataclass(kw_only=True)
class _Model:
    """A model's text and what the parallel block needs to know about it."""

    kind: str
    text: str  # use lines, defs and the model block
    top_calls: int  # top-level calls: units for stages
    layers: int
    heads: tuple[int, ...]
    params: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # name, shape
    column: list[str] = field(default_factory=list)  # Megatron column-parallel weights
    column_bias: list[str] = field(default_factory=list)
    row: list[str] = field(default_factory=list)  # row-parallel weights
    table: str | None = None  # the token embedding table
    head: str | None = None  # an untied output projection [d, vocab]
    call_names: list[str] = field(default_factory=list)  # names `recompute` may take
    inputs: tuple[str, str] = ("tokens", "targets")


def _words(rng: random.Random, count: int) -> list[str]:
    return rng.sample(WORDS, count)


def _drop(rng: random.Random) -> str:
    """Dropout on some models' residual branches (and the GPT's embedding)."""
    return ", 0.1" if rng.random() < 0.3 else ""


def _gpt(rng: random.Random, layers: int) -> _Model:
    heads = rng.choice([1, 2, 3, 4])
    drop = _drop(rng)
    d = heads * rng.choice([4, 6, 8])
    vocab = rng.choice([48, 64, 80, 96, 97])
    seq = rng.choice([4, 6, 8])
    text = f"""use std.gpt

model gpt(vocab = {vocab}, d = {d}, heads = {heads}, layers = {layers}, seq = {seq}) {{
  input tokens:  i64[batch, seq]
  input targets: i64[batch, seq] = next(tokens)
  x, wte = embed(tokens, vocab, d{drop})
  for i in 0..layers {{
    x = block(x, heads{drop})
  }}
  loss = lm_loss(x, wte, targets)
  output loss
}}
"""
    params = [("embed.wte", (vocab, d)), ("embed.wpe", (seq, d))]
    for i in range(layers):
        b = f"block[{i}]"
        for ln in ("ln1", "ln2"):
            params += [(f"{b}.{ln}.w", (d,)), (f"{b}.{ln}.b", (d,))]
        for p in ("q", "k", "v", "proj"):
            params += [(f"{b}.attn.{p}.w", (d, d)), (f"{b}.attn.{p}.b", (d,))]
        params += [(f"{b}.mlp.fc1.w", (d, 4 * d)), (f"{b}.mlp.fc1.b", (4 * d,)),
                   (f"{b}.mlp.fc2.w", (4 * d, d)), (f"{b}.mlp.fc2.b", (d,))]
    params += [("lm_loss.ln_f.w", (d,)), ("lm_loss.ln_f.b", (d,))]
    return _Model(kind="gpt", text=text, top_calls=layers + 2, layers=layers, heads=(heads,),
                  params=params,
                  column=["block[*].attn.q.w", "block[*].attn.k.w", "block[*].attn.v.w",
                          "block[*].mlp.fc1.w"],
                  column_bias=["block[*].attn.q.b", "block[*].attn.k.b", "block[*].attn.v.b",
                               "block[*].mlp.fc1.b"],
                  row=["block[*].attn.proj.w", "block[*].mlp.fc2.w"],
                  table="embed.wte", call_names=["block", "attn", "mlp", "ln1", "embed"])


def _llama(rng: random.Random, layers: int) -> _Model:
    kv = rng.choice([1, 2])
    drop = _drop(rng)
    heads = kv * rng.choice([1, 2])
    hd = rng.choice([4, 8])
    d = heads * hd
    hidden = rng.choice([2 * d, 3 * d, 40])
    vocab = rng.choice([48, 64, 96])
    seq = rng.choice([4, 8])
    text = f"""use std.llama

model llama(vocab = {vocab}, d = {d}, heads = {heads}, kv_heads = {kv}, hidden = {hidden},
            layers = {layers}, seq = {seq}) {{
  input tokens:  i64[batch, seq]
  input targets: i64[batch, seq] = next(tokens)
  x = llama_embed(tokens, vocab, d)
  for i in 0..layers {{
    x = llama_block(x, heads, kv_heads, hidden{drop})
  }}
  loss = llama_loss(x, vocab, targets)
  output loss
}}
"""
    params = [("llama_embed.wte", (vocab, d))]
    for i in range(layers):
        b = f"llama_block[{i}]"
        params += [(f"{b}.attn_norm.w", (d,)), (f"{b}.ffn_norm.w", (d,)),
                   (f"{b}.attn.q.w", (d, d)), (f"{b}.attn.k.w", (d, kv * hd)),
                   (f"{b}.attn.v.w", (d, kv * hd)), (f"{b}.attn.proj.w", (d, d)),
                   (f"{b}.ffn.gate.w", (d, hidden)), (f"{b}.ffn.up.w", (d, hidden)),
                   (f"{b}.ffn.down.w", (hidden, d))]
    params += [("llama_loss.norm.w", (d,)), ("llama_loss.output.w", (d, vocab))]
    b = "llama_block[*]"
    return _Model(kind="llama", text=text, top_calls=layers + 2, layers=layers,
                  heads=(heads, kv), params=params,
                  column=[f"{b}.attn.q.w", f"{b}.attn.k.w", f"{b}.attn.v.w", f"{b}.ffn.gate.w",
                          f"{b}.ffn.up.w"],
                  row=[f"{b}.attn.proj.w", f"{b}.ffn.down.w"], table="llama_embed.wte",
                  head="llama_loss.output.w",
                  call_names=["llama_block", "attn", "ffn", "attn_norm", "llama_embed"])


def _defs(rng: random.Random, layers: int) -> _Model:
    """A model from defs of the generator's own, with names of its own, over every op."""
    (emb, norm, lin, att, ff, blk, head, model_name, tok, tgt, q, k, v, o, a, b, n1, n2, nf,
     out, w, c) = _words(rng, 22)
    heads = rng.choice([1, 2, 3])
    hd = rng.choice([4, 6]) if heads != 3 else 4
    d = heads * hd
    hidden = rng.choice([2 * d, 3 * d, 20])
    vocab = rng.choice([40, 64, 72])
    seq = rng.choice([4, 6])
    rms = rng.random() < 0.5
    bias = rng.random() < 0.6
    pos = rng.random() < 0.5
    tied = rng.random() < 0.4
    act = rng.choice(ACTIVATIONS)
    attention = rng.choice(["fused", "explicit", "rope"])
    mix = rng.choice(["plain", "gated", "divided", "softmax"])
    regulariser = rng.choice(["none", "mean", "sum"])
    flat_loss = rng.random() < 0.3
    lines = []
    lines.append(f"def {emb}(ids: [bb, ss], vocab, d) {{")
    lines.append(f"  param {w}: f32[vocab, d] init normal(0.02)")
    if pos:
        lines.append(f"  param {c}: f32[ss, d] init normal(0.01)")
        lines.append(f"  return embedding(ids, {w}) + {c}, {w}")
    else:
        lines.append(f"  return embedding(ids, {w}), {w}")
    lines.append("}")
    lines.append(f"def {norm}(x: [*, d]) {{")
    lines.append(f"  param {w}: f32[d] init ones")
    if rms:
        lines.append(f"  return rms_norm(x, {w})")
    else:
        lines.append(f"  param {c}: f32[d] init zeros")
        lines.append(f"  return layer_norm(x, {w}, {c})")
    lines.append("}")
    lines.append(f"def {lin}(x: [*, din], dout) {{")
    lines.append(f"  param {w}: f32[din, dout] init normal(0.05)")
    if bias:
        lines.append(f"  param {c}: f32[dout] init zeros")
        lines.append(f"  return matmul(x, {w}) + {c}")
    else:
        lines.append(f"  return matmul(x, {w})")
    lines.append("}")
    lines.append(f"def {att}(x: [bb, ss, d], heads) {{")
    lines.append(f"  {q} = split_heads({lin}(x, d) as {q}, heads)")
    lines.append(f"  {k} = split_heads({lin}(x, d) as {k}, heads)")
    lines.append(f"  {v} = split_heads({lin}(x, d) as {v}, heads)")
    if attention == "rope":
        lines.append(f"  {o} = causal_attention(rope({q}), rope({k}), {v})")
    elif attention == "explicit":
        scale = 1.0 / hd ** 0.5
        lines.append(f"  {a} = softmax(matmul({q}, transpose({k})) * {scale:.6f}, causal = true)")
        lines.append(f"  {o} = matmul({a}, {v})")
    else:
        lines.append(f"  {o} = causal_attention({q}, {k}, {v})")
    lines.append(f"  return {lin}(merge_heads({o}), d) as {o}")
    lines.append("}")
    lines.append(f"def {ff}(x: [*, d], hidden) {{")
    if mix == "plain":
        lines.append(f"  {a} = {act}({lin}(x, hidden) as {a})")
    elif mix == "gated":
        lines.append(f"  {a}, {b} = split({lin}(x, 2 * hidden) as {a}, 2)")
        lines.append(f"  {a} = {a} * {act}({b})")
    elif mix == "divided":
        lines.append(f"  {a} = {lin}(x, hidden) as {a}")
        lines.append(f"  {b} = {lin}(x, hidden) as {b}")
        lines.append(f"  {a} = ({a} - {b}) / exp(tanh({b}))")
    else:
        lines.append(f"  {a} = softmax({lin}(x, hidden) as {a}) * {act}({lin}(x, hidden) as {b})")
    lines.append(f"  return {lin}({a}, d) as {b if mix == 'plain' else o}")
    lines.append("}")
    lines.append(f"def {blk}(x: [bb, ss, d], heads, hidden) {{")
    if rng.random() < 0.3:
        lines.append(f"  x = x + dropout({att}({norm}(x) as {n1}, heads) as {att}, 0.1)")
    else:
        lines.append(f"  x = x + {att}({norm}(x) as {n1}, heads) as {att}")
    lines.append("  x = reshape(x, [bb, ss, d])")
    lines.append(f"  return x + {ff}({norm}(x) as {n2}, hidden) as {ff}")
    lines.append("}")
    lines.append(f"def {head}(x: [bb, ss, d], table, labels, vocab) {{")
    lines.append(f"  h = {norm}(x) as {nf}")
    if tied:
        lines.append("  logits = matmul(h, transpose(table))")
    else:
        lines.append(f"  logits = {lin}(h, vocab) as {out}")
    if flat_loss:
        lines.append("  ce = cross_entropy(reshape(logits, [bb * ss, vocab]), "
                     "reshape(labels, [bb * ss]))")
    else:
        lines.append("  ce = cross_entropy(logits, labels)")
    if regulariser == "mean":
        lines.append("  return ce + mean(h * h) * 0.01")
    elif regulariser == "sum":
        lines.append("  return ce + sum(h * h) * 0.0001")
    else:
        lines.append("  return ce")
    lines.append("}")
    lines.append("")
    lines.append(f"model {model_name}(vocab = {vocab}, d = {d}, heads = {heads}, "
                 f"hidden = {hidden}, layers = {layers}, seq = {seq}) {{")
    lines.append(f"  input {tok}: i64[batch, seq]")
    lines.append(f"  input {tgt}: i64[batch, seq] = next({tok})")
    lines.append(f"  x, table = {emb}({tok}, vocab, d)")
    lines.append("  for i in 0..layers {")
    lines.append(f"    x = {blk}(x, heads, hidden)")
    lines.append("  }")
    lines.append(f"  loss = {head}(x, table, {tgt}, vocab)")
    lines.append("  output loss")
    lines.append("}")
    # parameter names, as the checker scopes them
    params = [(f"{emb}.{w}", (vocab, d))] + ([(f"{emb}.{c}", (seq, d))] if pos else [])

    def norm_params(scope: str) -> list:
        return [(f"{scope}.{w}", (d,))] + ([] if rms else [(f"{scope}.{c}", (d,))])

    def lin_params(scope: str, din: int, dout: int) -> list:
        return [(f"{scope}.{w}", (din, dout))] + ([(f"{scope}.{c}", (dout,))] if bias else [])

    for i in range(layers):
        s = f"{blk}[{i}]"
        params += norm_params(f"{s}.{n1}") + norm_params(f"{s}.{n2}")
        for name in (q, k, v, o):
            params += lin_params(f"{s}.{att}.{name}", d, d)
        if mix == "gated":
            params += lin_params(f"{s}.{ff}.{a}", d, 2 * hidden)
        else:
            params += lin_params(f"{s}.{ff}.{a}", d, hidden)
        if mix in ("divided", "softmax"):
            params += lin_params(f"{s}.{ff}.{b}", d, hidden)
        params += lin_params(f"{s}.{ff}.{b if mix == 'plain' else o}", hidden, d)
    params += norm_params(f"{head}.{nf}")
    if not tied:
        params += lin_params(f"{head}.{out}", d, vocab)
    s = f"{blk}[*]"
    down = f"{s}.{ff}.{b if mix == 'plain' else o}.{w}"
    column = [f"{s}.{att}.{name}.{w}" for name in (q, k, v)]
    column += [f"{s}.{ff}.{a}.{w}"] + ([f"{s}.{ff}.{b}.{w}"] if mix in ("divided", "softmax")
                                        else [])
    column_bias = [f"{s}.{att}.{name}.{c}" for name in (q, k, v)] if bias else []
    if bias and mix != "gated":
        column_bias += [f"{s}.{ff}.{a}.{c}"]
    return _Model(kind="defs", text="\n".join(lines) + "\n", top_calls=layers + 2,
                  layers=layers, heads=(heads,), params=params, column=column,
                  column_bias=column_bias, row=[f"{s}.{att}.{o}.{w}", down],
                  table=f"{emb}.{w}", head=None if tied else f"{head}.{out}.{w}",
                  call_names=[blk, att, ff, n1, emb], inputs=(tok, tgt))


def _factor(rng: random.Random, devices: int, count: int) -> list[int]:
    """`count` sizes whose product is `devices` (ones allowed)."""
    sizes = [1] * count
    rest = devices
    while rest > 1:
        sizes[rng.randrange(count)] *= 2
        rest //= 2
    return sizes


def _mesh(rng: random.Random, devices: int) -> list[tuple[str, int]]:
    count = rng.choice([1, 2, 2, 3]) if devices > 1 else rng.choice([1, 2])
    sizes = _factor(rng, devices, count)
    names = rng.sample(AXIS_NAMES, count)
    if rng.random() < 0.6:
        names[rng.randrange(count)] = "pp"
    return list(zip(names, sizes))


def _entry(rng: random.Random, shape: tuple[int, ...], axes: list[str]) -> str:
    """A random SBP for one tensor: B, or S of a random dim over one or two axes."""
    if not axes or rng.random() < 0.2:
        return "B"
    first = rng.choice(axes)
    entry = f"S({rng.randrange(len(shape))})@{first}"
    others = [a for a in axes if a != first]
    if others and rng.random() < 0.3:
        entry += f", S({rng.randrange(len(shape))})@{rng.choice(others)}"
    return entry


def _sbp(rng: random.Random, model: _Model, mesh: list[tuple[str, int]],
         data_axes: list[str]) -> tuple[list[str], set[str]]:
    axes = [a for a, _ in mesh if a != "pp"]
    rules: list[str] = []
    kinds: set[str] = set()
    tok, tgt = model.inputs
    if data_axes:
        kinds.add("batch2" if len(data_axes) > 1 else "batch")
        entries = ", ".join(f"S(0)@{a}" for a in data_axes)
        if len(data_axes) == len(axes) and len(axes) > 1 and rng.random() < 0.5:
            entries = "S(0)"  # bare: every non-pipeline axis
        rules.append(f"{tok}, {tgt}: {entries}")
    weights = [n for n, shape in model.params if len(shape) == 2]
    # random splits of random tensors first: the first rule that matches a name wins
    if axes and rng.random() < 0.35:
        kinds.add("random")
        for name, shape in rng.sample(model.params, min(len(model.params), rng.randint(1, 4))):
            rules.append(f"{name}: {_entry(rng, shape, axes)}")
    model_axes = [a for a in axes if a not in data_axes] or axes
    if axes and rng.random() < 0.45:
        tp = rng.choice(model_axes)
        kinds.add("tp")
        rules.append(", ".join(model.column) + f": S(1)@{tp}")
        if model.column_bias:
            rules.append(", ".join(model.column_bias) + f": S(0)@{tp}")
        rules.append(", ".join(model.row) + f": S(0)@{tp}")
    if axes and model.table and rng.random() < 0.3:
        kinds.add("vocab")
        ax = rng.choice(axes)
        rules.append(f"{model.table}: S(0)@{ax}")
        if model.head:
            rules.append(f"{model.head}: S(1)@{ax}")
    if data_axes and rng.random() < 0.4:
        kinds.add("zero")
        zero_axis = rng.choice(data_axes)
        style = rng.choice(["all", "subset", "one"])
        if style == "all":
            rules.append(f"*.{_last(weights[0])}: S(0)@{zero_axis}" if weights
                         else f"*: S(0)@{zero_axis}")
        elif style == "subset":
            for name in rng.sample(weights, min(len(weights), 3)):
                rules.append(f"{name}: S({rng.choice([0, 1])})@{zero_axis}")
        else:
            rules.append(f"{rng.choice(weights)}: S(0)@{zero_axis}")
    return rules, kinds


def _last(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _schedule(rng: random.Random, pp: int, model: _Model, microbatches: int) -> tuple[str, str]:
    if pp == 1:
        return "1f1b", ""
    families = ["gpipe", "1f1b", "zb_h1"]
    if model.layers % (2 * pp) == 0 and microbatches % pp == 0:
        families.append("interleaved")
    if pp >= 3:
        families.append("skip")
    family = rng.choice(families)
    if family == "interleaved":
        return family, "interleaved(virtual = 2)"
    if family == "skip":
        options = [f"ratio = {rng.choice([0.1, 0.25, 0.34, 0.5])}", f"seed = {rng.randrange(5)}"]
        if rng.random() < 0.25:
            options.append("paths = greedy")
        if pp >= 4 and rng.random() < 0.4 and "paths = greedy" not in options:
            options.append("reorder = true")  # a choice of the search, not of greedy paths
        return family, f"skip({', '.join(options)})"
    return family, family


def _hardware(rng: random.Random, devices: int, family: str) -> str:
    """The CPU preset, or for a skip plan sometimes the same figures with one device per
    node in regions joined by slow links (the path search then routes around them)."""
    if family != "skip" or rng.random() < 0.6:
        return f"hardware hw = std.hw.cpu(devices = {devices})"
    regions = [rng.randrange(2) for _ in range(devices)]
    regions = [0 if r == regions[0] else 1 for r in regions]  # number them from 0
    count = len(set(regions))
    links = "" if count == 1 else (
        f"  region_bw {rng.choice(['20 MB/s', '200 MB/s'])}\n"
        f"  region_latency {rng.choice(['1 ms', '10 ms'])}\n")
    region_line = f"  regions {regions}\n" if count > 1 else ""
    return ("hardware hw {\n  device cpu\n  devices " + str(devices) +
            "\n  devices_per_node 1\n  memory 8 GB\n  flops_f32 50 GFLOPS\n"
            "  mem_bw 20 GB/s\n  intra_bw 5 GB/s\n  intra_latency 20 us\n"
            "  inter_bw 1 GB/s\n  inter_latency 50 us\n  op_overhead 20 us\n"
            + region_line + links + "}")


def generate_plan(seed: int, index: int) -> GeneratedPlan:
    """Plan `index` of the sweep with this seed."""
    rng = random.Random(f"parc-sweep:{seed}:{index}")
    devices = rng.choice([1, 2, 2, 4, 4, 4, 8])
    mesh = _mesh(rng, devices)
    sizes = dict(mesh)
    pp = sizes.get("pp", 1)
    virtual_needed = 2 if pp > 1 and rng.random() < 0.2 else 1
    layers = max(1, rng.choice([1, 2, 2, 4]))
    while layers + 2 < pp * virtual_needed:
        layers *= 2
    if virtual_needed == 2:
        layers = max(layers, 2 * pp)
    kind = rng.choice(["gpt", "llama", "defs", "defs"])
    model = {"gpt": _gpt, "llama": _llama, "defs": _defs}[kind](rng, layers)
    axes = [a for a, _ in mesh if a != "pp"]
    data_axes: list[str] = []
    if axes and rng.random() < 0.8:
        data_axes = [rng.choice(axes)]
        others = [a for a in axes if a not in data_axes]
        if others and rng.random() < 0.25:
            data_axes.append(rng.choice(others))
    split = 1
    for a in data_axes:
        split *= sizes[a]
    microbatches = rng.choice([1, 2, 4]) if pp == 1 else pp * rng.choice([1, 2])
    per_microbatch = split * rng.choice([1, 2])
    batch = microbatches * per_microbatch
    if rng.random() < 0.04:  # an odd batch: a plan the checker must refuse
        batch += 1
    rules, kinds = _sbp(rng, model, mesh, data_axes)
    family, schedule = _schedule(rng, pp, model, microbatches)
    recompute = rng.choice(["none"] * 4 + ["all"] + model.call_names[:3])
    precision = "bf16" if rng.random() < 0.12 else "f32"
    optimizer = rng.choice(["adamw(lr = 3e-3, weight_decay = 0.01)", "adamw(lr = 1e-3)",
                            "sgd(lr = 0.1, momentum = 0.9)"])
    clip = "\n  grad_clip 0.05" if rng.random() < 0.3 else ""
    hardware = _hardware(rng, devices, family)
    mesh_text = ", ".join(f"{a} = {n}" for a, n in mesh)
    parallel = [f"  mesh ({mesh_text})"]
    if rules:
        parallel += ["  sbp {"] + [f"    {r}" for r in rules] + ["  }"]
    parallel.append("  stages auto")
    if schedule:
        parallel.append(f"  schedule {schedule}")
    if recompute != "none":
        parallel.append(f"  recompute {recompute}")
    text = (f"# generated plan {seed}:{index}\nuse std.hw\n\n"
            f"{hardware}\n\n{model.text}\n"
            f"train {{\n  batch {batch}; microbatches {microbatches}; steps 2\n"
            f"  optimizer {optimizer}\n  data synthetic(seed = {rng.randrange(100)})\n"
            f"  seed {rng.randrange(100)}{clip}\n"
            + (f"  precision {precision}\n" if precision != "f32" else "")
            + "}\n\nparallel on hw {\n" + "\n".join(parallel) + "\n}\n")
    # drawn last, so that the plans before it stay as they were: context parallelism on an
    # axis that neither the batch nor any rule splits, for a model without dropout
    seq = int(re.search(r"seq = (\d+)", model.text).group(1))
    free = [a for a in axes if a not in data_axes and sizes[a] > 1 and seq % (2 * sizes[a]) == 0
            and not any(f"@{a}" in rule for rule in rules)]
    if free and "0.1" not in model.text and rng.random() < 0.5:
        text = text.replace("  stages auto\n", f"  stages auto\n  context_parallel "
                            f"{rng.choice(free)}\n", 1)
        kinds.add("cp")
    return GeneratedPlan(name=f"s{seed}_p{index}", text=text, devices=devices, model=kind,
                         family=family, mesh=" x ".join(f"{a}={n}" for a, n in mesh),
                         sbp=tuple(sorted(kinds)), precision=precision, recompute=recompute)


def generate(seed: int, count: int, start: int = 0) -> list[GeneratedPlan]:
    return [generate_plan(seed, i) for i in range(start, start + count)]
