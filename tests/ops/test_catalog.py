import pytest

from parc.ops.catalog import CATALOG, ShapeError, broadcast
from parc.ops.dims import Dim
from parc.ops.types import TensorT

B = Dim.symbol("batch")


def t(*shape, dtype="f32"):
    return TensorT(dtype, tuple(Dim.of(d) for d in shape))


def infer(op, *operands, **attrs):
    spec = CATALOG[op]
    full = {name: default for name, default in spec.attrs}
    full.update(attrs)
    return spec.infer(list(operands), full)


def test_matmul_broadcasts_batch_dims():
    assert infer("matmul", t(B, 16, 32), t(32, 64)) == [t(B, 16, 64)]
    with pytest.raises(ShapeError, match="inner dimensions differ"):
        infer("matmul", t(B, 16, 32), t(16, 64))


def test_broadcasting():
    assert broadcast((B, Dim.of(16), Dim.of(32)), (Dim.of(16), Dim.of(32))) == (
        B, Dim.of(16), Dim.of(32))
    assert broadcast((Dim.of(3),), (Dim.of(4),)) is None
    with pytest.raises(ShapeError, match="do not broadcast"):
        infer("add", t(4, 3), t(4, 4))


def test_heads_round_trip():
    (heads,) = infer("split_heads", t(B, 16, 32), heads=4)
    assert heads == t(B, 4, 16, 8)
    assert infer("merge_heads", heads) == [t(B, 16, 32)]
    with pytest.raises(ShapeError, match="does not split into 3 heads"):
        infer("split_heads", t(B, 16, 32), heads=3)


def test_grouped_query_attention():
    q, kv = t(B, 8, 16, 4), t(B, 2, 16, 4)
    assert infer("causal_attention", q, kv, kv) == [q]
    with pytest.raises(ShapeError, match="do not group"):
        infer("causal_attention", q, t(B, 3, 16, 4), t(B, 3, 16, 4))


def test_cross_entropy_needs_integer_targets_of_the_right_shape():
    assert infer("cross_entropy", t(B, 16, 64), t(B, 16, dtype="i64")) == [TensorT("f32", ())]
    with pytest.raises(ShapeError, match="integer"):
        infer("cross_entropy", t(B, 16, 64), t(B, 16))
    with pytest.raises(ShapeError, match="need targets"):
        infer("cross_entropy", t(B, 16, 64), t(B, 8, dtype="i64"))


def test_split_and_reshape():
    assert infer("split", t(B, 16, 96), parts=3) == [t(B, 16, 32)] * 3
    assert infer("reshape", t(4, 6), shape=[Dim.of(24)]) == [t(24)]
    with pytest.raises(ShapeError, match="number of elements"):
        infer("reshape", t(4, 6), shape=[Dim.of(25)])


def test_norms_check_weight_shapes():
    assert infer("layer_norm", t(B, 32), t(32), t(32)) == [t(B, 32)]
    with pytest.raises(ShapeError, match="weight must have shape"):
        infer("rms_norm", t(B, 32), t(16))


def test_every_op_is_documented():
    for spec in CATALOG.values():
        assert spec.doc and spec.operands
