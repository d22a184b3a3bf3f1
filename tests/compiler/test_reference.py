"""The contract's reference of a skip plan runs the plan's own paths: the search weighs the
plan's costs, and the reference's differ (no recomputation, no other axes)."""

from parc.compiler.plan import make_plan
from parc.compiler.reference import reference_spec
from parc.dsl.check import check_text
from tests.examples import ROOT


def test_the_reference_of_a_skip_plan_takes_the_plans_paths():
    text = (ROOT / "examples" / "gpt_skip.par").read_text().replace(
        "schedule skip(ratio = 0.25, seed = 0)", "schedule skip(ratio = 0.25, seed = 3)\n"
        "  recompute all")
    spec = check_text(text, "gpt_skip_recompute.par")
    plan = make_plan(spec)
    ref = reference_spec(spec, plan)
    assert ref.parallel.recompute == () and ref.parallel.mesh == (("pp", 4),)
    # searched again under the reference's costs, the paths come out otherwise here
    assert make_plan(ref).schedule.paths == plan.schedule.paths
