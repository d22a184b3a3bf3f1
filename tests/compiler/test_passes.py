"""Each pass alone: IR text in, one pass, printed IR out."""

from parc.compiler.ir import print_graph
from parc.compiler.ir_parse import parse_graph
from parc.compiler.passes import run_passes
from parc.compiler.verify import verify

MLP = """\
graph mlp mesh(tp=2) batch=4
input %x: f32[batch, 8] {B@tp}
param %w1: f32[8, 32] {S(1)@tp} init normal(0.02)
param %w2: f32[32, 8] {S(0)@tp} init normal(0.02)
%1: f32[batch, 32] = matmul(%x, %w1)
%2: f32[batch, 32] = gelu(%1)
%3: f32[batch, 8] = matmul(%2, %w2)
%4: f32[batch, 8] = add(%3, %x)
output y = %4
"""


def run(text: str, *passes: str) -> str:
    graph = run_passes(parse_graph(text), list(passes))
    verify(graph)
    return print_graph(graph)


def test_sbp_propagates_and_records_needs():
    assert run(MLP, "sbp").splitlines()[4:8] == [
        "%1: f32[batch, 32] {S(1)@tp} = matmul(%x, %w1)",
        "%2: f32[batch, 32] {S(1)@tp} = gelu(%1)",
        "%3: f32[batch, 8] {P@tp} = matmul(%2, %w2)",
        "%4: f32[batch, 8] {B@tp} = add(%3, %x) needs(B@tp; B@tp)",
    ]


def test_boxing_inserts_megatron_all_reduces():
    after = run(run(MLP, "sbp"), "boxing")
    assert after.splitlines()[4:] == [
        "%6: f32[batch, 8] {B@tp} = grad_all_reduce(%x) [axis=tp]",
        "%1: f32[batch, 32] {S(1)@tp} = matmul(%6, %w1)",
        "%2: f32[batch, 32] {S(1)@tp} = gelu(%1)",
        "%3: f32[batch, 8] {P@tp} = matmul(%2, %w2)",
        "%5: f32[batch, 8] {B@tp} = all_reduce(%3) [axis=tp]",
        "%4: f32[batch, 8] {B@tp} = add(%5, %x)",
        "output y = %4",
    ]


def test_shapes_pass_rederives_types():
    wrong = MLP.replace("%2: f32[batch, 32] = gelu", "%2: f32[batch, 31] = gelu")
    assert run(wrong, "shapes") == MLP


ZERO = """\
graph zero mesh(dp=2) batch=64
input %x: f32[batch, 8] {S(0)@dp}
param %w: f32[8, 16] {S(0)@dp} init normal(0.02)
%1: f32[batch, 16] = matmul(%x, %w)
output y = %1
"""


def test_zero_style_parameter_is_gathered_and_its_gradient_reduce_scattered():
    lines = run(ZERO, "sbp", "boxing").splitlines()
    assert lines[3:5] == [
        "%2: f32[8, 16] {B@dp} = all_gather(%w) [axis=dp, grad=partial]",
        "%1: f32[batch, 16] {S(0)@dp} = matmul(%x, %2)",
    ]
    assert not any("grad_all_reduce" in line for line in lines)  # all_gather's backward is RS


TWO_AXES = """\
graph rows mesh(dp=2, tp=2) batch=8
input %x: f32[batch, 8] {B@dp, B@tp}
param %w: f32[8, 16] {S(0)@dp, S(0)@tp} init normal(0.02)
%1: f32[batch, 16] = matmul(%x, %w)
%2: f32[batch, 16] = gelu(%1)
output y = %2
"""


def test_a_dim_split_over_two_axes_is_gathered_innermost_first():
    """The runtime cuts a dim outer axis first (rank (i, j) holds block i * 2 + j): gathering
    tp first rebuilds each dp block, then dp the whole. dp first would order the rows
    0, 2, 1, 3."""
    lines = run(TWO_AXES, "sbp", "boxing").splitlines()
    gathers = [line for line in lines if "all_gather" in line]
    assert [line.split("[axis=")[1].split(",")[0] for line in gathers] == ["tp", "dp"]
    assert "{S(0)@dp, B@tp} = all_gather(%w) [axis=tp" in gathers[0]


REPLICATED_GATHER = """\
graph fallback mesh(tp=2) batch=3
input %x: f32[batch, 8] {B@tp}
param %w: f32[8, 6] {S(1)@tp} init normal(0.02)
%1: f32[batch, 6] = matmul(%x, %w)
%2: f32[batch, 6] = softmax(%1) [dim=-1]
%3: f32[batch, 6] = gelu(%2)
output y = %3
"""


def test_a_gather_whose_users_run_replicated_keeps_its_slice_of_the_gradient():
    """Softmax needs its row whole (and 3 rows do not split over 2). After the gather every
    rank computes the same thing: the gradient arriving at
    the gather is whole, so its backward keeps this rank's slice (summing it over the axis
    would count it tp times); the matmul before it hands its input a partial gradient."""
    lines = run(REPLICATED_GATHER, "sbp", "boxing").splitlines()
    gather = next(line for line in lines if "all_gather" in line)
    assert gather.endswith("[axis=tp, grad=whole]")
    assert any("grad_all_reduce(%x)" in line for line in lines)


TIED = """\
graph tied mesh(dp=2) batch=4
input %ids: i64[batch] {B@dp}
input %h: f32[batch, 8] {S(0)@dp}
param %t: f32[16, 8] {B@dp} init normal(0.02)
%1: f32[batch, 8] = embedding(%ids, %t)
%2: f32[8, 16] = transpose(%t) [dim0=-2, dim1=-1]
%3: f32[batch, 16] = matmul(%h, %2)
%4: f32[batch, 8] = add(%1, %1)
output y = %3
output z = %4
"""


def test_a_parameter_read_whole_and_split_is_synced_per_backward_not_per_step():
    """The embedding runs replicated (a whole gradient), the head on a batch split (a partial
    one): only the head's share may be summed over dp, so the all-reduce stays in the
    backward pass in front of the head instead of summing the whole gradient once per step."""
    from parc.compiler.step_sync import step_syncs

    graph = run_passes(parse_graph(TIED), ["sbp", "boxing"])
    syncs = [op for op in graph.ops if op.kind == "grad_all_reduce"]
    assert [op.inputs for op in syncs] == [("t",)]
    readers = [op.kind for op in graph.ops if "t" in op.inputs]
    assert readers == ["embedding", "grad_all_reduce"]
    assert step_syncs(graph) == {}
