"""The contract on generated plans: a fixed sample of the sweep (bench/contract_sweep.py runs
it at scale). Every plan is refused by the checker at a located line, or it trains two steps
exactly as its single-process reference."""

from collections import Counter
from pathlib import Path

import pytest

from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError
from parc.ops.catalog import CATALOG

from .plans import generate, generate_plan
from .sweep import run_sweep
from .tuned import tuned_plans

SEED, COUNT, TUNED = 0, 44, 6
# plans a larger sweep failed on, kept in the sample once fixed: bf16 pipelines with dropout
# whose reference did not round where the stages send in bf16
FOUND = [(3, 287), (3, 409)]
# skip plans whose posting holds the sends that skip stages one group longer (8 stages, 5:28;
# 4 stages, 5:211): the runtime follows those orders too
HELD = [(5, 28), (5, 211)]
# context parallelism around attention written out (a causal softmax of the scores): the
# sequence is gathered, scattered and exchanged in the load-balanced layout
CONTEXT = [(3, 11)]


def sample():
    return generate(SEED, COUNT) + tuned_plans(SEED, TUNED) + \
        [generate_plan(seed, index) for seed, index in FOUND + HELD + CONTEXT]


def test_the_held_plans_hold_their_skipping_sends():
    from parc.compiler.plan import make_plan

    for seed, index in HELD:
        plan = generate_plan(seed, index)
        assert make_plan(check_text(plan.text, f"{plan.name}.par")).schedule.hold_hops


def test_plans_are_reproducible_from_their_seed_and_index():
    assert generate_plan(3, 17).text == generate_plan(3, 17).text
    assert generate_plan(3, 17).text != generate_plan(3, 18).text
    assert [p.name for p in generate(3, 2, start=5)] == ["s3_p5", "s3_p6"]


def test_the_sample_covers_every_op_family_mesh_and_sbp_kind():
    plans = sample()
    ops: set[str] = set()
    for plan in plans:
        try:
            spec = check_text(plan.text, f"{plan.name}.par")
        except ParcError:
            continue
        ops |= {op.kind for op in spec.model.ops}
    assert ops == set(CATALOG), set(CATALOG) - ops
    assert {p.family for p in plans} == {"gpipe", "1f1b", "interleaved", "zb_h1", "skip"}
    assert {p.devices for p in plans} == {1, 2, 4, 8}
    kinds = Counter(k for p in plans for k in p.sbp)
    assert set(kinds) == {"batch", "batch2", "tp", "vocab", "zero", "random", "cp"}, kinds
    assert {p.model for p in plans} == {"gpt", "llama", "defs"}
    assert any(" = 1" in p.mesh or "=1" in p.mesh for p in plans)  # a size-1 axis
    assert {p.precision for p in plans} == {"f32", "bf16"}
    assert {p.source for p in plans} == {"random", "tune"}


@pytest.mark.slow
def test_generated_plans_meet_the_contract(tmp_path: Path):
    outcomes = run_sweep(sample(), tmp_path)
    failed = [f"{o.plan.name} ({o.stage}): {o.detail[-800:]}\n{o.plan.text}"
              for o in outcomes if o.status == "failed"]
    assert not failed, "\n\n".join(failed)
    counts = Counter(o.status for o in outcomes)
    assert counts["passed"] >= 0.8 * len(outcomes), counts  # most plans really run
