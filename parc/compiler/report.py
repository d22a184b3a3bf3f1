"""What `parc plan` and `parc schedule` print: tables, JSON, and the family comparison."""

from __future__ import annotations

from rich.table import Table

from ..dsl.vocab_check import VOCAB_FAMILIES
from .plan import Plan, make_plan
from .schedules import FAMILIES, V_SHAPED


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _gb(size: float) -> str:
    return f"{size / 1e9:.3f}"


def plan_tables(plan: Plan) -> list:
    spec, par = plan.spec, plan.spec.parallel
    mesh = " x ".join(f"{a}={n}" for a, n in par.mesh)
    sched = plan.schedule
    stages = Table(title=f"{spec.model.name} on {par.hardware.name} ({mesh}), {sched.family}, "
                   f"{sched.num_microbatches} microbatches: predicted step "
                   f"{_ms(plan.predicted_step_s)} ms, bubble {plan.simulation.bubble_ratio:.1%}")
    for column in ("stage", "rank", "layers", "params", "GFLOP/mb", "F ms", "B ms", "W ms",
                   "send MB", "act MB/mb"):
        stages.add_column(column, justify="left" if column == "layers" else "right")
    for st in plan.stages:
        layers = st.units[0] if len(st.units) == 1 else f"{st.units[0]} .. {st.units[-1]}"
        stages.add_row(str(st.index), str(st.rank), f"{layers} ({len(st.units)})",
                       f"{st.param_numel / 1e6:.2f}M", f"{st.flops / 1e9:.2f}", _ms(st.fwd),
                       _ms(st.bwd_input),
                       _ms(st.bwd_weight), f"{st.send_bytes / 1e6:.2f}",
                       f"{st.act_bytes / 1e6:.2f}")
    memory = Table(title=f"memory per rank (GB of {_gb(par.hardware.memory)})")
    for column in ("rank", "params", "grads", "optimizer", "activations", "total", "fits"):
        memory.add_column(column, justify="right")
    for r, m in enumerate(plan.memory):
        ok = m.total <= par.hardware.memory
        memory.add_row(str(r), _gb(m.params), _gb(m.grads), _gb(m.optimizer), _gb(m.activations),
                       _gb(m.total), "yes" if ok else
                       f"[bold red]no: {_gb(m.total - par.hardware.memory)} GB over[/]")
    out = [stages, memory]
    if plan.vocab is not None:
        out.append(vocab_table(plan))
    return out


def vocab_table(plan: Plan) -> Table:
    """Each rank's share of the vocabulary (`vocab_parallel pp`), on top of its stages."""
    v = plan.vocab
    table = Table(title=f"vocabulary over the {v.pp} pipeline ranks, on every rank: "
                  f"{v.layers.vocab // v.pp} of {v.layers.vocab} rows of `{v.layers.table}`"
                  + ("" if v.layers.head == v.layers.table else f" and `{v.layers.head}`"))
    for column in ("params", "GFLOP/mb", "E ms", "O ms", "G ms", "logits MB (one mb)"):
        table.add_column(column, justify="right")
    table.add_row(f"{v.param_numel / 1e6:.2f}M", f"{v.flops / 1e9:.2f}", _ms(v.embed_fwd),
                  _ms(v.output), _ms(v.embed_bwd), f"{v.transient_bytes / 1e6:.2f}")
    return table


def vocab_json(plan: Plan) -> dict | None:
    v = plan.vocab
    if v is None:
        return None
    return {"table": v.layers.table, "head": v.layers.head, "vocab": v.layers.vocab,
            "rows_per_rank": v.layers.vocab // v.pp, "param_numel_per_rank": v.param_numel,
            "flops_per_microbatch": v.flops, "embed_fwd_s": v.embed_fwd, "output_s": v.output,
            "embed_bwd_s": v.embed_bwd, "grad_sync_s": v.step,
            "transient_bytes": v.transient_bytes}


def plan_json(plan: Plan) -> dict:
    par = plan.spec.parallel
    return {
        "model": plan.spec.model.name,
        "hardware": par.hardware.name,
        "mesh": dict(par.mesh),
        "schedule": plan.schedule.family,
        "microbatches": plan.schedule.num_microbatches,
        "predicted_step_s": plan.predicted_step_s,
        "bubble_ratio": plan.simulation.bubble_ratio,
        "fits": plan.fits,
        "stages": [{"stage": s.index, "rank": s.rank, "layers": s.units,
                    "param_numel": s.param_numel, "flops_per_microbatch": s.flops,
                    "fwd_s": s.fwd, "bwd_input_s": s.bwd_input,
                    "bwd_weight_s": s.bwd_weight, "grad_sync_s": s.step,
                    "send_bytes": s.send_bytes, "activation_bytes_per_microbatch": s.act_bytes}
                   for s in plan.stages],
        "memory": [{"rank": r, "params": m.params, "grads": m.grads, "optimizer": m.optimizer,
                    "activations": m.activations, "total": m.total}
                   for r, m in enumerate(plan.memory)],
        "boundaries": plan.partition.explanation,
        "shared_params": plan.shared_params,
        "vocab_parallel": vocab_json(plan),
    }


def schedule_json(plan: Plan) -> dict:
    sim = plan.simulation
    return {
        "family": plan.schedule.family,
        "num_ranks": plan.schedule.num_ranks,
        "num_stages": plan.schedule.num_stages,
        "num_microbatches": plan.schedule.num_microbatches,
        "ranks": [{"rank": r, "actions": [{"op": a.op, "stage": a.stage, "mb": a.mb}
                                          for a in actions]}
                  for r, actions in enumerate(plan.schedule.ranks)],
        "paths": [list(p) for p in plan.schedule.paths],
        "bubble_ratio": sim.bubble_ratio,
        "predicted_step_s": plan.predicted_step_s,
        "peak_activation_bytes": sim.peak_activation_bytes,
        # `vocab_parallel`: each rank's actions with the vocabulary passes (E, O, G; stage
        # -1, on every rank) where it joins them
        "vocab_order": None if plan.vocab is None else [
            [{"op": a.op, "stage": a.stage, "mb": a.mb}
             for a in (st.run or st.collective for st in steps if st.run or st.collective)]
            for steps in plan.posting],
    }


def comparison(spec) -> list[tuple[str, Plan | None, str]]:
    """Every family that applies to the spec's mesh, planned and simulated on it."""
    pp, m = spec.parallel.axis_size("pp"), spec.train.microbatches
    rows = []
    for family in FAMILIES:
        virtual = None
        if spec.parallel.vocab_parallel is not None and family not in VOCAB_FAMILIES:
            rows.append((family, None, "vocab_parallel: 1F1B and GPipe only"))
            continue
        if family == "interleaved":
            virtual = spec.parallel.schedule.virtual if spec.parallel.schedule.name == \
                "interleaved" else 2
            layers = spec.model.num_layers
            if pp < 2 or m % pp or layers % (pp * virtual):
                rows.append((family, None, "needs pp >= 2, m % pp == 0, layers % (pp*v) == 0"))
                continue
        if family in V_SHAPED and (pp < 2 or spec.model.num_layers % (2 * pp)):
            rows.append((family, None, "needs pp >= 2, layers % (2*pp) == 0"))
            continue
        if family == "skip" and pp < 3:
            rows.append((family, None, "needs pp >= 3"))
            continue
        label = f"interleaved(v={virtual})" if virtual else family
        rows.append((label, make_plan(spec, family, virtual), ""))
    return rows


def comparison_table(rows) -> Table:
    table = Table(title="every schedule family on this spec")
    for column in ("schedule", "step ms", "bubble", "peak activations GB", "max memory GB",
                   "note"):
        table.add_column(column, justify="left" if column in ("schedule", "note") else "right")
    for label, plan, note in rows:
        if plan is None:
            table.add_row(label, "-", "-", "-", "-", note)
            continue
        if plan.schedule.family == "skip":
            from .schedules.skip import achieved_ratio

            note = f"skips {achieved_ratio(plan.schedule):.0%} of middle-stage visits"
        table.add_row(label, _ms(plan.predicted_step_s), f"{plan.simulation.bubble_ratio:.1%}",
                      _gb(max(plan.simulation.peak_activation_bytes)),
                      _gb(max(m.total for m in plan.memory)), note)
    return table
