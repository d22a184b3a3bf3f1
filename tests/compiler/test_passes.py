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
        "%2: f32[8, 16] {B@dp} = all_gather(%w) [axis=dp]",
        "%1: f32[batch, 16] {S(0)@dp} = matmul(%x, %2)",
    ]
    assert not any("grad_all_reduce" in line for line in lines)  # all_gather's backward is RS
