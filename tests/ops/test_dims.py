from fractions import Fraction

from parc.ops.dims import Dim

batch = Dim.symbol("batch")


def test_arithmetic_normalises():
    assert batch * 2 + batch == 3 * batch
    assert (batch * 6).divide(batch) == Dim.of(6)
    assert batch.divide(4).terms == (((("batch",)), Fraction(1, 4)),)
    assert str(batch.divide(4)) == "batch/4"
    assert str(2 * batch + 1) == "2*batch + 1"


def test_exact_division_only():
    assert Dim.of(6).divide(3) == Dim.of(2)
    assert not Dim.of(6).divide(4).is_int
    assert batch.divide(Dim.symbol("seq")) is None
    assert Dim.of(1).divide(0) is None


def test_substitution_and_divisibility():
    assert batch.subs({"batch": 8}) == Dim.of(8)
    assert batch.divisible_by(2) is None
    assert Dim.of(12).divisible_by(4) is True
    assert Dim.of(6).divisible_by(4) is False
