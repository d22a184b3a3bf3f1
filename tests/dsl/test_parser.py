import pytest

from parc.dsl import ast
from parc.dsl.diagnostics import ParcError
from parc.dsl.parser import parse

DESIGN_EXAMPLE = """\
use std.gpt
use std.hw

hardware cpu4 = std.hw.cpu(devices = 4)

model gpt(vocab = 512, d = 128, heads = 4, layers = 8, seq = 64) {
  input  tokens:  i64[batch, seq]
  x = embed(tokens, vocab, d)       # a comment
  for i in 0..layers {
    x = block(x, heads)
  }
  output loss
}

train {
  batch 32; microbatches 8; steps 50
  optimizer adamw(lr = 3e-4, weight_decay = 0.1)
}

parallel on cpu4 {
  mesh (pp = 2, dp = 2)
  sbp {
    tokens, targets: S(0)@dp
    block[*].mlp.fc1.w: S(1)@tp, S(0)@dp
    *: B
  }
  stage 0 = embed, block[0..4]; stage 1 = block[4..8], lm_loss
  schedule interleaved(virtual = 2)
}
"""


def test_parses_every_item_kind():
    module = parse(DESIGN_EXAMPLE, "x.par")
    kinds = [type(item).__name__ for item in module.items]
    assert kinds == ["Use", "Use", "HardwareInst", "Model", "Train", "Parallel"]


def test_ast_equality_ignores_spans():
    a = parse(DESIGN_EXAMPLE, "a.par")
    b = parse("\n\n" + DESIGN_EXAMPLE.replace("  ", "    "), "a.par")
    assert a == b
    assert a.items[3].span != b.items[3].span


def test_spans_point_at_source():
    module = parse(DESIGN_EXAMPLE, "x.par")
    model = module.items[3]
    assert (model.span.line, model.span.col) == (6, 1)
    loop = model.body[2]
    assert isinstance(loop, ast.For) and (loop.span.line, loop.span.col) == (9, 3)


def test_expressions_and_precedence():
    module = parse("model m { x = a + b * -c / 2\n y = f(x, k = 1) as g }", "m.par")
    x = module.items[0].body[0].value
    assert x == ast.BinOp("+", ast.Name(("a",)), ast.BinOp(
        "/", ast.BinOp("*", ast.Name(("b",)), ast.Neg(ast.Name(("c",)))), ast.Int(2)))
    call = module.items[0].body[1].value
    assert call == ast.Call(ast.Name(("f",)), (ast.Name(("x",)),),
                            (ast.Kwarg("k", ast.Int(1)),), scope="g")


def test_sbp_and_stage_items():
    parallel = parse(DESIGN_EXAMPLE, "x.par").items[5]
    sbp = parallel.body[1]
    assert sbp.rules[1] == ast.SbpRule(("block[*].mlp.fc1.w",), (
        ast.SbpEntry("S", 1, "tp"), ast.SbpEntry("S", 0, "dp")))
    assert sbp.rules[2].entries == (ast.SbpEntry("B", None, None),)
    stage = parallel.body[2]
    assert stage.items[1] == ast.StageItem("block", ast.Int(0), ast.Int(4))
    assert parallel.body[4] == ast.Schedule("interleaved", (), (ast.Kwarg("virtual", ast.Int(2)),))


def test_schedule_name_may_start_with_a_digit():
    parallel = parse("parallel on h { schedule 1f1b }", "p.par").items[0]
    assert parallel.body[0] == ast.Schedule("1f1b", (), ())


def test_units_only_in_settings():
    hw = parse("hardware h { memory 80 GB\n intra_bw 450 GB/s\n lat 3 us }", "h.par").items[0]
    assert [s.values[0] for s in hw.settings] == [
        ast.Quantity(ast.Int(80), "GB"), ast.Quantity(ast.Int(450), "GB/s"),
        ast.Quantity(ast.Int(3), "us")]
    # In a model a variable may be called `s` after a number.
    parse("model m { n = 4\n s = n }", "m.par")


def test_several_syntax_errors_in_one_run():
    with pytest.raises(ParcError) as exc:
        parse("model a {\n  y = + 1\n}\n\ndef f(x) {\n  return\n}\n", "two.par")
    assert [(d.span.line, d.code) for d in exc.value.diagnostics] == [(2, "E002"), (7, "E002")]


@pytest.mark.parametrize("text, message", [
    ("model m {\n  x = f(1)\n", "expected `}` to close `model m` opened at 1:9, found end of file"),
    ("model m {\n  x = f(1\n}\n", "expected `)` to close `(` opened at 2:8, found `}`"),
    ("model m {\n  input x f32[4]\n}\n", "expected `:`, found name `f32`"),
    ("model m {\n  x =\n}\n", "expected an expression, found `}`"),
    ("model m {\n  def f() { }\n}\n", "`def` belongs at the top level, not inside `model m` "
     "opened at 1:9"),
    ("parallel on h { sbp { x: Split(0) } }",
     "expected `B`, `P`, `S(dim)` or `auto`, found name `Split`"),
])
def test_syntax_errors_in_words(text, message):
    with pytest.raises(ParcError) as exc:
        parse(text, "e.par")
    assert exc.value.diagnostics[0].message == message
