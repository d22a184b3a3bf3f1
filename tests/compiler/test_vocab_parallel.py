"""`vocab_parallel pp` on GPT-2 small (examples/gpt2_small.par with a pipeline and data
parallelism only): the partitioner balances the blocks alone, every rank carries vocab / pp
rows of the tied table, and the plan says what the vocabulary costs each rank."""

import re
from pathlib import Path

import pytest

from parc import api
from parc.dsl.diagnostics import ParcError

EXAMPLE = Path(__file__).parents[2] / "examples" / "gpt2_small.par"


def gpt2_small(tmp_path, pp: int, vocab: bool, schedule: str = "1f1b") -> Path:
    text = EXAMPLE.read_text().replace("mesh (pp = 2, dp = 2, tp = 2)",
                                       f"mesh (pp = {pp}, dp = {8 // pp})")
    text = re.sub(r"    block\[\*\].*\n", "", text)
    text = text.replace("  schedule 1f1b\n", f"  schedule {schedule}\n" +
                        ("  vocab_parallel pp\n" if vocab else ""))
    path = tmp_path / f"gpt2_pp{pp}{'_vocab' if vocab else ''}.par"
    path.write_text(text)
    return path


def blocks(plan) -> list[int]:
    return [sum(u.startswith("block[") for u in st.units) for st in plan.stages]


def test_pp2_balances_blocks_6_6(tmp_path):
    before = api.plan(gpt2_small(tmp_path, 2, vocab=False))
    after = api.plan(gpt2_small(tmp_path, 2, vocab=True))
    assert blocks(before) == [8, 4]  # the head and loss weigh as much as four blocks
    assert blocks(after) == [6, 6]
    params = [m.params for m in after.memory]
    assert max(params) / min(params) < 1.02
    before_params = [m.params for m in before.memory]
    assert max(before_params) / min(before_params) > 3  # the table sits on stage 0
    assert after.vocab.param_numel == 50304 * 768 / 2  # tied: one slice per rank
    assert "embed.wte" in before.shared_params and "embed.wte" not in after.shared_params
    times = [st.fwd + st.bwd_input + st.bwd_weight for st in after.stages]
    assert max(times) / min(times) < 1.01


def test_pp4_balances_blocks_3_3_3_3(tmp_path):
    before = api.plan(gpt2_small(tmp_path, 4, vocab=False))
    after = api.plan(gpt2_small(tmp_path, 4, vocab=True))
    assert blocks(before) == [4, 4, 4, 0]  # the last stage holds the head and loss alone
    assert blocks(after) == [3, 3, 3, 3]
    out = api.plan_json(after)["vocab_parallel"]
    assert out["rows_per_rank"] == 50304 // 4 and out["output_s"] > out["embed_fwd_s"] > 0


def test_1f1b_step_time_improves_at_pp2(tmp_path):
    before = api.plan(gpt2_small(tmp_path, 2, vocab=False))
    after = api.plan(gpt2_small(tmp_path, 2, vocab=True))
    assert after.predicted_step_s < 0.97 * before.predicted_step_s


def test_gpipe_step_time_improves(tmp_path):
    before = api.plan(gpt2_small(tmp_path, 4, vocab=False, schedule="gpipe"))
    after = api.plan(gpt2_small(tmp_path, 4, vocab=True, schedule="gpipe"))
    assert after.predicted_step_s < 0.95 * before.predicted_step_s
    ops = {e.action.op for e in after.simulation.events}
    assert {"E", "O", "G"} <= ops


def test_the_program_is_refused_until_the_runtime_runs_it(tmp_path):
    path = gpt2_small(tmp_path, 2, vocab=True)
    with pytest.raises(ParcError) as info:
        api.compile_program(path, tmp_path / "out")
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E357" and diagnostic.span.line == 33
    assert not (tmp_path / "out").exists()


def test_schedule_json_lists_the_passes_on_every_rank(tmp_path):
    plan = api.plan(gpt2_small(tmp_path, 2, vocab=True, schedule="gpipe"))
    out = api.schedule_json(plan)["vocab_order"]
    passes = [[(a["op"], a["mb"]) for a in rank if a["stage"] == -1] for rank in out]
    assert passes[0] == passes[1]
    assert sorted(passes[0]) == sorted((op, mb) for op in "EOG" for mb in range(16))
    assert api.schedule_json(api.plan(gpt2_small(tmp_path, 2, vocab=False)))["vocab_order"] \
        is None
