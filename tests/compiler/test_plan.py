"""Cost model, partition and plans on real specs."""

import re
import time
from pathlib import Path

import pytest

from parc.compiler.cost import CostModel
from parc.compiler.passes import lower
from parc.compiler.plan import make_plan
from parc.compiler.verify import verify
from parc.dsl.check import check_file, check_text

ROOT = Path(__file__).resolve().parents[2]
GPT2 = (ROOT / "examples/gpt2_small.par").read_text()


def big_spec(layers=96, pp=8, m=64, v=4):
    text = GPT2.replace("layers = 12", f"layers = {layers}").replace(
        "mesh (pp = 2, dp = 2, tp = 2)", f"mesh (pp = {pp})").replace(
        "schedule 1f1b", f"schedule interleaved(virtual = {v})").replace(
        "batch 512; microbatches 16", f"batch 512; microbatches {m}")
    return check_text(re.sub(r"  sbp \{.*?\n  \}\n", "", text, flags=re.S), "big.par")


def test_matmul_time_is_flops_over_achievable_peak():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    graph = lower(spec)
    cost = CostModel(graph, spec.parallel.hardware)
    op = next(op for op in graph.ops if op.kind == "matmul" and op.scope.endswith("mlp.fc1"))
    # [32, 1024, 768] @ [768, 3072], split over dp (batch) and tp (columns): 4 ways
    flops = 2 * 32 * 1024 * 768 * 3072 / 4
    hw = spec.parallel.hardware
    launch = hw.op_overhead  # a kernel costs at least its launch
    # the matmul and its bias add run as one F.linear: the add pays the launch
    assert cost.op_time(op).fwd == pytest.approx(flops / (hw.flops_f32 * hw.efficiency))
    bias = next(o for o in graph.ops if o.kind == "add" and op.outputs[0] in o.inputs)
    assert cost.op_time(bias).fwd > launch
    t = cost.op_time(op)
    assert t.bwd_input == pytest.approx(t.fwd) and t.bwd_weight == pytest.approx(t.fwd)
    assert launch == pytest.approx(5e-6)


def test_axes_map_to_links():
    text = (ROOT / "examples/gpt2_small.par").read_text().replace(
        "h100_node(nodes = 1)", "h100_node(nodes = 2)").replace(
        "mesh (pp = 2, dp = 2, tp = 2)", "mesh (dp = 2, pp = 2, tp = 4)")
    spec = check_text(text, "two.par")
    cost = CostModel(lower(spec), spec.parallel.hardware)
    assert cost.axis_link("tp") == pytest.approx((450e9, 3e-6))  # inside a node: NVLink
    assert cost.axis_link("pp") == pytest.approx((450e9, 3e-6))  # pp x tp = 8: one node
    assert cost.axis_link("dp") == pytest.approx((50e9, 5e-6))  # across nodes: InfiniBand


def test_tensor_parallel_all_reduce_time():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    graph = lower(spec)
    cost = CostModel(graph, spec.parallel.hardware)
    op = next(op for op in graph.ops if op.kind == "all_reduce")
    size = 32 * 1024 * 768 * 4 / 2  # one dp shard of the activation
    expected = 2 * 3e-6 + 2 * size * (2 - 1) / 2 / 450e9  # ring: 2(n-1) steps, 2(n-1)/n of T
    assert cost.op_time(op).fwd == pytest.approx(expected)


def test_auto_stages_balance_blocks_and_count_the_head():
    plan = make_plan(check_file(ROOT / "examples/gpt2_small.par"))
    verify(plan.graph)
    first, last = plan.stages
    assert first.units[0] == "embed" and last.units[-1] == "lm_loss"
    # the tied 50k-vocabulary head is heavy: the last stage gets fewer blocks
    assert len(last.units) < len(first.units)
    times = [s.fwd + s.bwd_input + s.bwd_weight for s in plan.stages]
    assert max(times) / min(times) < 1.2
    assert plan.partition.explanation[0].startswith("stage 0 | 1 between `block[")


def test_memory_limit_moves_the_boundary():
    spec = check_file(ROOT / "examples/gpt2_small.par")
    free = make_plan(spec)
    text = GPT2.replace('hardware node = std.hw.h100_node(nodes = 1)',
                        'hardware node = std.hw.h100_node(nodes = 1)\n' + SMALL_NODE)
    tight = make_plan(check_text(text.replace("parallel on node", "parallel on small"), "t.par"))
    assert tight.fits
    assert len(tight.stages[0].units) < len(free.stages[0].units)


SMALL_NODE = """hardware small {
  devices 8
  memory 10 GB
  flops_bf16 989 TFLOPS
  flops_f32 67 TFLOPS
  mem_bw 3.35 TB/s
  intra_bw 450 GB/s
  intra_latency 3 us
  efficiency 0.75
}
"""


def test_plan_that_does_not_fit_says_so():
    text = GPT2.replace('hardware node = std.hw.h100_node(nodes = 1)',
                        SMALL_NODE.replace("10 GB", "1 GB").replace("small", "node"))
    plan = make_plan(check_text(text, "t.par"))
    assert not plan.fits


def test_explicit_stages_are_kept():
    plan = make_plan(check_file(ROOT / "examples/gpt_stages.par"))
    assert [s.units for s in plan.stages] == [["embed", "block[0]", "block[1]"],
                                              ["block[2]", "block[3]", "lm_loss"]]


def test_tied_embedding_lives_on_both_ends():
    plan = make_plan(check_file(ROOT / "examples/gpt_tiny.par"))
    assert plan.shared_params == ["embed.wte"]
    stages = {plan.graph.values[op.outputs[0]].stage for op in plan.graph.ops
              if op.inputs == ("embed.wte",)}
    assert stages == {0, 1}


def test_interleaved_stage_ranks_and_recompute_lowers_memory():
    spec = check_file(ROOT / "examples/gpt_interleaved.par")
    plan = make_plan(spec)
    assert [s.rank for s in plan.stages] == [0, 1, 2, 3, 0, 1, 2, 3]
    text = (ROOT / "examples/gpt_interleaved.par").read_text().replace(
        "schedule interleaved(virtual = 2)", "schedule interleaved(virtual = 2)\n  recompute all")
    lean = make_plan(check_text(text, "r.par"))
    assert max(lean.simulation.peak_activation_bytes) < max(plan.simulation.peak_activation_bytes)
    assert lean.predicted_step_s > plan.predicted_step_s  # the forward runs twice


def test_planning_a_96_layer_model_is_fast():
    spec = big_spec()
    best = min(_timed(lambda: make_plan(spec)) for _ in range(2))
    assert best < 2.0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_recomputing_a_def_trades_time_for_memory():
    text = (ROOT / "examples/gpt2_small.par").read_text()
    full = make_plan(check_text(text, "a.par"))
    lean = make_plan(check_text(text.replace("  schedule 1f1b",
                                             "  schedule 1f1b\n  recompute block"), "b.par"))
    # the blocks keep only their inputs; the head's logits and log-softmax are not recomputed
    assert lean.memory[0].activations < full.memory[0].activations / 5
    assert max(m.activations for m in lean.memory) < max(m.activations for m in full.memory) / 2
    assert lean.predicted_step_s > full.predicted_step_s


def _two_node_cost(mesh: str, precision: str = "f32") -> CostModel:
    text = GPT2.replace("h100_node(nodes = 1)", "h100_node(nodes = 2)").replace(
        "mesh (pp = 2, dp = 2, tp = 2)", f"mesh ({mesh})").replace(
        "steps 100", f"steps 100\n  precision {precision}")
    if "tp" not in mesh:
        text = re.sub(r"  sbp \{.*?\n  \}\n", "  sbp {\n    tokens, targets: S(0)@dp\n  }\n",
                      text, flags=re.S)
    spec = check_text(text, "two.par")
    return CostModel(lower(spec), spec.parallel.hardware, precision)


def test_collectives_across_nodes_use_a_port_per_member_in_the_node():
    # dp = 16 over two nodes: eight rings side by side, each crossing nodes on its own port,
    # capped by NVLink inside the node
    assert _two_node_cost("dp = 16").axis_link("dp") == pytest.approx((400e9, 5e-6))
    # dp = 4 with tp = 4 inside: two dp members per node, two ports
    assert _two_node_cost("dp = 4, tp = 4").axis_link("dp") == pytest.approx((100e9, 5e-6))
    # a pipeline transfer between nodes has one GPU's port
    cost = _two_node_cost("pp = 2, dp = 8")
    assert cost.p2p_time(50e9) == pytest.approx(5e-6 + 1.0)


def test_gradient_sync_is_f32_under_bf16_and_pays_latency_per_bucket():
    from parc.ops.comm import SYNC_BUCKET_BYTES, ring_time

    for precision in ("f32", "bf16"):
        cost = _two_node_cost("dp = 16", precision)
        op = next(op for op in cost.graph.ops if op.kind == "grad_all_reduce"
                  and op.inputs[0].endswith("ln1.w"))
        size = 768 * 4  # f32 gradients whichever the compute precision
        expected = ring_time("all_reduce", size, 16, 400e9, 5e-6 * size / SYNC_BUCKET_BYTES)
        assert cost.op_time(op).step == pytest.approx(expected)


def test_bf16_keeps_a_weight_copy_per_microbatch_in_flight():
    from parc.compiler.passes.partition import build_units

    units = {p: build_units(c.graph, c) for p, c in
             (("f32", _two_node_cost("dp = 16")), ("bf16", _two_node_cost("dp = 16", "bf16")))}
    block = {p: next(u for u in us if u.name == "block[0]") for p, us in units.items()}
    weights = 4 * 768 * 768 + 2 * 768 * 3072  # q, k, v, proj; fc1, fc2
    # (a norm's and attention's row statistics stay f32: 0.1% of it)
    assert block["bf16"].act_bytes == pytest.approx(block["f32"].act_bytes / 2 + 2 * weights,
                                                    rel=2e-3)


def test_recompute_all_holds_one_stage_forward_at_the_backward():
    spec = check_text(GPT2.replace("  schedule 1f1b", "  schedule 1f1b\n  recompute all"),
                      "r.par")
    plan = make_plan(spec)
    for rank, memory in enumerate(plan.memory):
        whole = max(st.act_bytes for st in plan.stages if st.rank == rank)
        assert memory.activations >= whole
        assert memory.activations == pytest.approx(
            whole + plan.simulation.peak_activation_bytes[rank])


def test_optimizer_step_is_bytes_plus_launches():
    from dataclasses import replace

    from parc.compiler.cost import optimizer_time

    hw = check_file(ROOT / "examples/gpt2_small.par").parallel.hardware
    gpu = optimizer_time(hw, "adamw", 1e9, 100)
    # one fused multi-tensor step: a few launches and a little per tensor
    assert gpu == pytest.approx(1e9 * 28 / hw.mem_bw + (4 + 0.1 * 100) * hw.op_overhead)
    cpu = optimizer_time(replace(hw, device="cpu"), "adamw", 1e9, 100)
    assert cpu == pytest.approx(gpu)  # fused on CPU too
    assert optimizer_time(hw, "sgd", 1e9, 100) < gpu  # fewer bytes per element


def test_vocabulary_parallel_loss_pays_three_row_all_reduces():
    text = (ROOT / "examples/gpt2_small.par").read_text()
    spec = check_text(text.replace("    *: B", "    embed.wte: S(0)@tp\n    *: B"), "vocab.par")
    graph = lower(spec)
    cost = CostModel(graph, spec.parallel.hardware)
    loss = next(op for op in graph.ops if op.kind == "cross_entropy")
    assert str(graph.values[loss.inputs[0]].sbp).endswith("S(2)@tp")
    bandwidth, latency = cost.axis_link("tp")
    rows = 32 * 1024 / 2  # the microbatch's tokens on one dp shard
    per = 2 * latency + 2 * (4 * rows) / 2 / bandwidth  # all-reduce of one f32 per row, n = 2
    assert cost.vocab_parallel_time(loss) == pytest.approx(3 * per)
    assert cost.op_time(loss).fwd > 3 * per


def test_zero_bubble_charges_w_the_matmul_weight_gradients():
    spec = check_file(ROOT / "examples/gpt_zb.par")
    plan = make_plan(spec)
    durations: dict[tuple[str, int], float] = {}
    for e in plan.simulation.events:
        durations[(e.action.op, e.action.stage)] = e.end - e.start
    first, later = plan.stages[0], plan.stages[1]
    # the first stage has token ids in: B is its whole backward and W has nothing left
    assert durations[("W", 0)] == 0.0
    assert durations[("B", 0)] == pytest.approx(first.bwd_input + first.bwd_weight)
    # later stages: W is the matmuls' weight gradients (plus an autograd call each)
    assert 0 < later.bwd_deferred < later.bwd_weight and later.deferred_ops > 0
    assert durations[("W", 1)] == pytest.approx(
        later.bwd_deferred + 4.0 * spec.parallel.hardware.op_overhead * later.deferred_ops)
    assert later.deferred_bytes > 0


REGIONS = """hardware geo {
  device cuda
  devices 8
  devices_per_node 2
  memory 80 GB
  flops_f32 67 TFLOPS
  flops_bf16 989 TFLOPS
  mem_bw 3.35 TB/s
  intra_bw 450 GB/s
  intra_latency 3 us
  inter_bw 50 GB/s
  inter_latency 5 us
  efficiency 0.75
  regions [0, 0, 1, 2]
  region_bw 1 GB/s, 2 GB/s, 4 GB/s
  region_latency 10 ms, 20 ms, 40 ms
}
"""


def _region_spec(mesh: str, rules: str = "    tokens, targets: S(0)@dp\n"):
    text = GPT2.replace("hardware node = std.hw.h100_node(nodes = 1)", REGIONS).replace(
        "parallel on node", "parallel on geo").replace("mesh (pp = 2, dp = 2, tp = 2)",
                                                       f"mesh ({mesh})")
    text = re.sub(r"  sbp \{.*?\n  \}\n", f"  sbp {{\n{rules}  }}\n" if rules else "", text,
                  flags=re.S)
    return check_text(text, "geo.par")


def test_regions_give_each_pair_of_nodes_its_link():
    hw = _region_spec("pp = 4, dp = 2").parallel.hardware
    # nodes 0, 1 share region 0; node 2 is region 1; node 3 region 2 (two devices a node)
    assert hw.link(0, 1) == pytest.approx((450e9, 3e-6))  # one node: NVLink
    assert hw.link(0, 2) == pytest.approx((50e9, 5e-6))  # two nodes of one region
    assert hw.link(1, 4) == pytest.approx((1e9, 10e-3))  # regions 0 and 1
    assert hw.link(5, 6) == pytest.approx((4e9, 40e-3))  # regions 1 and 2
    assert hw.link(7, 0) == pytest.approx((2e9, 20e-3))  # regions 2 and 0


def test_pipeline_transfers_and_collectives_take_the_links_they_cross():
    spec = _region_spec("pp = 4, dp = 2")
    cost = CostModel(lower(spec), spec.parallel.hardware)
    # pp rank r holds devices 2r, 2r + 1: one node each
    assert cost.p2p_time(1e9, 0, 1) == pytest.approx(5e-6 + 1e9 / 50e9)
    assert cost.p2p_time(1e9, 1, 2) == pytest.approx(10e-3 + 1.0)
    assert cost.p2p_time(1e9, 2, 3) == pytest.approx(40e-3 + 1e9 / 4e9)
    assert cost.axis_link("dp") == pytest.approx((450e9, 3e-6))  # inside each node
    spread = _region_spec("dp = 8")
    cost = CostModel(lower(spread), spread.parallel.hardware)
    # a ring over every node runs at its slowest link between regions, two ports a node
    assert cost.axis_link("dp") == pytest.approx((2 * 1e9, 40e-3))


def test_the_partition_gives_less_work_to_a_stage_that_sends_over_a_slow_link():
    text = GPT2.replace("hardware node = std.hw.h100_node(nodes = 1)", REGIONS.replace(
        "region_bw 1 GB/s, 2 GB/s, 4 GB/s", "region_bw 20 GB/s, 20 GB/s, 0.5 GB/s")).replace(
        "parallel on node", "parallel on geo").replace("mesh (pp = 2, dp = 2, tp = 2)",
                                                       "mesh (pp = 4, dp = 2)")
    text = re.sub(r"  sbp \{.*?\n  \}\n", "  sbp {\n    tokens, targets: S(0)@dp\n  }\n", text,
                  flags=re.S).replace("layers = 12", "layers = 24")
    plan = make_plan(check_text(text, "geo.par"))
    blocks = [sum(u.startswith("block") for u in s.units) for s in plan.stages]
    uniform = make_plan(check_text(re.sub(r"  regions .*?ms\n", "", text, flags=re.S),
                                   "flat.par"))
    even = [sum(u.startswith("block") for u in s.units) for s in uniform.stages]
    # stage 2 sends from region 1 to region 2 over 0.5 GB/s: it gets fewer blocks
    assert blocks[2] < even[2]
    assert sum(blocks) == sum(even) == 24


def test_skip_stages_visited_less_often_take_more_layers():
    text = (ROOT / "examples/gpt_skip.par").read_text().replace("layers = 8", "layers = 16")
    full = make_plan(check_text(text.replace("schedule skip(ratio = 0.25, seed = 0)",
                                             "schedule 1f1b"), "full.par"))
    half = make_plan(check_text(text.replace("ratio = 0.25", "ratio = 0.5"), "half.par"))

    def blocks(plan):
        return [sum(u.startswith("block") for u in s.units) for s in plan.stages]
    # middle stages run for half the microbatches, so they hold about twice the layers
    assert blocks(half)[1] + blocks(half)[2] > blocks(full)[1] + blocks(full)[2]
    assert "share of microbatches" in plan_explanation(half)


def plan_explanation(plan) -> str:
    return "\n".join(plan.partition.explanation)


def test_the_balance_minimises_the_slowest_stage_then_its_slowest_compute():
    """Checked against every split of random unit times and sends: the slowest stage (compute
    and send, the last stage sending nothing) is least, and among splits that slow, so is the
    slowest compute."""
    import itertools
    import random
    from types import SimpleNamespace

    from parc.compiler.passes.partition import StageConfig, Unit, _balance

    rng = random.Random(7)
    for _ in range(300):
        n, k = rng.randrange(3, 8), rng.randrange(2, 4)
        if k > n:
            continue
        units = [Unit(name=f"u{i}", fwd=float(rng.randrange(1, 6)),
                      out_bytes=float(rng.choice([0, 0, 3, 6]))) for i in range(n)]
        cost = SimpleNamespace(hw=SimpleNamespace(regions=None),
                               p2p_time=lambda size, *ranks: size)
        config = StageConfig(k, k, "1f1b", 4, float("inf"))

        def score(bounds, units=units, k=k):
            compute = [sum(u.time for u in units[a:b]) for a, b in bounds]
            sends = [units[b - 1].out_bytes if s < k - 1 else 0.0
                     for s, (a, b) in enumerate(bounds)]
            return max(c + d for c, d in zip(compute, sends)), max(compute)

        every = [list(zip((0,) + cuts, cuts + (n,)))
                 for cuts in itertools.combinations(range(1, n), k - 1)]
        assert score(_balance(units, config, cost)) == min(map(score, every))
