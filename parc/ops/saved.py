"""What each primitive's backward keeps, as the generated torch code runs it: the memory a
microbatch holds from its forward to its backward.

`SAVES[kind]` names the operands (by index) and "out" (the result) that autograd saves; a
view's result shares its operand's storage (`VIEWS`), so a tensor saved through views counts
once. `EXTRA[kind]` is what an op saves besides its operands and result, in elements per
element of the given operand (the dropout mask, the log-softmax of a cross-entropy) or per
row (a norm's statistics). A merge of heads is a copy, except after causal attention, whose
output is laid out so that the merge is a view.
"""

from __future__ import annotations

SAVES: dict[str, tuple] = {
    "matmul": (0, 1), "mul": (0, 1), "div": (0, 1),
    "add": (), "sub": (), "scale": (), "sum": (), "mean": (),
    "gelu": (0,), "silu": (0,), "relu": ("out",), "tanh": ("out",), "sigmoid": ("out",),
    "exp": ("out",),
    "layer_norm": (0,), "rms_norm": (0,), "softmax": ("out",),
    "embedding": (0,), "rope": (), "dropout": (),
    "causal_attention": (0, 1, 2, "out"), "cross_entropy": (1,),
    "split_heads": (), "merge_heads": (), "transpose": (), "reshape": (), "split": (),
}
VIEWS = {"split_heads", "transpose", "reshape", "split"}
# views a batched matmul cannot read in place: it saves a contiguous copy of its operand
RELAYOUTS = {"split_heads", "transpose"}
# (operand, elements per element of it, f32) and (operand, f32 elements per row)
EXTRA: dict[str, tuple[int, float]] = {
    "dropout": (0, 1.0),  # the mask, in the operand's dtype
    "cross_entropy": (0, 1.0),  # the log-softmax of the logits
    "rms_norm": (0, 1.0),  # the normalised rows (the weight's gradient reads them)
}
PER_ROW: dict[str, tuple[int, float]] = {
    "layer_norm": (0, 2.0),  # mean and 1/std
    "rms_norm": (0, 1.0),  # 1/rms
    "causal_attention": (0, 1.0),  # the log-sum-exp of each query row
}
