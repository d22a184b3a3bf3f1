"""Plans that `parc tune` would recommend: its candidates for a generated spec (ZeRO and
tensor-parallel ones included), written as the `parallel` block tune emits, so the sweep
holds what tune recommends to the contract too."""

from __future__ import annotations

import random
import re
from dataclasses import replace

from parc.compiler.tune import candidates, parallel_text, sbp_rules
from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError

from .plans import GeneratedPlan, generate_plan


def tuned_plans(seed: int, count: int) -> list[GeneratedPlan]:
    """`count` plans, each a random candidate of tune's for a generated spec of 4 or 8
    devices; a third with ZeRO, a third with tp > 1 where the spec allows it."""
    rng = random.Random(f"parc-tune:{seed}")
    out: list[GeneratedPlan] = []
    index = 0
    while len(out) < count:
        base = generate_plan(seed + 1000, index)
        index += 1
        if base.devices < 4 or base.precision != "f32":
            continue
        serial = re.sub(r"parallel on hw \{.*?\n\}", "parallel on hw {\n  auto\n}", base.text,
                        flags=re.S)
        try:
            spec = check_text(serial, f"{base.name}.par")
        except ParcError:
            continue
        found = candidates(spec, spec.parallel.hardware, base.devices)
        wanted = rng.choice(["zero", "tp", "any"])
        pool = [c for c in found if (wanted == "zero" and c.zero) or (wanted == "tp" and c.tp > 1)
                or wanted == "any"] or found
        if not pool:
            continue
        c = rng.choice(pool)
        block = parallel_text("hw", c, sbp_rules(spec, c.dp, c.tp, c.zero))
        text = re.sub(r"parallel on hw \{.*?\n\}\n", block, serial, flags=re.S)
        text = re.sub(r"microbatches \d+", f"microbatches {c.microbatches}", text, count=1)
        axes = " x ".join(f"{a}={n}" for a, n in (("dp", c.dp), ("pp", c.pp), ("tp", c.tp))
                          if n > 1)
        kinds = tuple(kind for kind, on in (("batch", c.dp > 1), ("tp", c.tp > 1),
                                            ("zero", c.zero)) if on)
        out.append(replace(base, name=f"t{seed}_p{len(out)}", text=text, family=c.family,
                           mesh=axes or "dp=1", sbp=kinds,
                           recompute="all" if c.recompute else "none", source="tune"))
    return out
