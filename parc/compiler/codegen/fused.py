"""Triton kernels for the fuse pass's groups: one forward and one backward kernel per distinct
pattern, shared by every group with that pattern (a deep model compiles a handful, not one per
layer).

The forward loads every operand once (expanded to the group's shape), runs the chain in f32 and
stores the result. The backward recomputes the chain, then walks it in reverse applying each
op's derivative, and stores one gradient per operand; the autograd wrapper sums a gradient back
to its operand's shape when the operand was broadcast (a bias).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..ir import Graph, Op
from ..passes.fuse import NORMS

K_GELU = 0.7978845608028654  # sqrt(2 / pi)

# op -> forward expression over its operand variables
FORWARD = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
    "scale": "{0} * {factor!r}",
    "gelu": f"0.5 * {{0}} * (1.0 + (2.0 * tl.sigmoid(2.0 * {K_GELU} * ({{0}} + 0.044715 * "
            "{0} * {0} * {0})) - 1.0))",
    "silu": "{0} * tl.sigmoid({0})", "relu": "tl.maximum({0}, 0.0)",
    "tanh": "2.0 * tl.sigmoid(2.0 * {0}) - 1.0", "sigmoid": "tl.sigmoid({0})",
    "exp": "tl.exp({0})",
}


def _derivatives(kind: str, a: list[str], out: str, g: str, attrs: dict) -> list[str]:
    """The gradient flowing to each operand of `kind`, given its output's gradient `g`."""
    if kind == "add":
        return [g, g]
    if kind == "sub":
        return [g, f"-{g}"]
    if kind == "mul":
        return [f"{g} * {a[1]}", f"{g} * {a[0]}"]
    if kind == "div":
        return [f"{g} / {a[1]}", f"-{g} * {a[0]} / ({a[1]} * {a[1]})"]
    if kind == "scale":
        return [f"{g} * {attrs['factor']!r}"]
    x = a[0]
    if kind == "gelu":
        t = f"(2.0 * tl.sigmoid(2.0 * {K_GELU} * ({x} + 0.044715 * {x} * {x} * {x})) - 1.0)"
        return [f"{g} * (0.5 * (1.0 + {t}) + 0.5 * {x} * (1.0 - {t} * {t}) * {K_GELU} * "
                f"(1.0 + 3.0 * 0.044715 * {x} * {x}))"]
    if kind == "silu":
        return [f"{g} * tl.sigmoid({x}) * (1.0 + {x} * (1.0 - tl.sigmoid({x})))"]
    if kind == "relu":
        return [f"tl.where({x} > 0.0, {g}, 0.0)"]
    if kind == "tanh":
        return [f"{g} * (1.0 - {out} * {out})"]
    if kind == "sigmoid":
        return [f"{g} * {out} * (1.0 - {out})"]
    if kind == "exp":
        return [f"{g} * {out}"]
    raise KeyError(kind)


@dataclass
class FusedKernel:
    index: int
    inputs: list[str]  # IR names of the chain's operands, in kernel order
    output: str  # the last op's result (the norm's, in a row kernel)
    ops: list[Op]
    forward: list[str] = field(default_factory=list)  # kernel body lines
    backward: list[str] = field(default_factory=list)  # a row kernel's: the body for one row
    # a row kernel's backward, before and after its loop over a block of rows: the weight
    # gradients are summed over the block and stored as one partial row per program
    before_rows: list[str] = field(default_factory=list)
    after_rows: list[str] = field(default_factory=list)
    norm: Op | None = None  # a row kernel: the chain's result normalised over the last dim
    keeps_sum: bool = False  # a row kernel also stores the chain's result (used elsewhere)
    sites: list[str] = field(default_factory=list)  # scopes of every group that calls it

    def pattern(self) -> tuple:
        """What the kernel's code depends on: groups with the same pattern share one kernel
        (operand sizes and dtypes are the call's; Triton specialises on them itself)."""
        return (tuple(self.forward), tuple(self.backward), tuple(self.before_rows),
                tuple(self.after_rows), self.norm.kind if self.norm else None, self.keeps_sum,
                len(self.inputs))

    @property
    def name(self) -> str:
        return f"fused_{self.index}"

    @property
    def weights(self) -> list[str]:
        """The norm's weight (and bias) operands, after the chain's."""
        return list(self.norm.inputs[1:]) if self.norm is not None else []

    @property
    def outputs(self) -> list[str]:
        """IR names the kernel's call returns, in order."""
        if self.norm is not None and self.keeps_sum:
            return [self.norm.inputs[0], self.output]
        return [self.output]


def _chain(ops: list[Op], made: set[str]) -> tuple[list[str], list[tuple[Op, list[str], str]]]:
    """The chain's operands, and each op with its operand variables and result variable."""
    inputs: list[str] = []
    for op in ops:
        for name in op.inputs:
            if name not in made and name not in inputs:
                inputs.append(name)
    local = {name: f"a{i}" for i, name in enumerate(inputs)}
    chain: list[tuple[Op, list[str], str]] = []
    for k, op in enumerate(ops):
        args = [local[n] for n in op.inputs]
        local[op.outputs[0]] = f"v{k}"
        chain.append((op, args, f"v{k}"))
    return inputs, chain


def _backward(chain: list[tuple[Op, list[str], str]], n_inputs: int) -> tuple[list[str], list[str]]:
    """Lines applying each op's derivative in reverse from `gout`, and the gradient stores."""
    grads = {chain[-1][2]: "gout"}
    back: list[str] = []
    for op, args, out in reversed(chain):
        g = grads.get(out)
        if g is None:
            continue
        for arg, expr in zip(args, _derivatives(op.kind, args, out, g, dict(op.attrs))):
            name = f"g_{arg}"
            if arg in grads:
                back.append(f"{grads[arg]} = {grads[arg]} + ({expr})")
            else:
                back.append(f"{name} = {expr}")
                grads[arg] = name
    stores = [f"tl.store(D{i} + offs, {grads.get(f'a{i}', '0.0 * gout')}, mask=mask)"
              for i in range(n_inputs)]
    return back, stores


def _needed(lines: list[str], used: str) -> list[str]:
    """The assignments among `lines` that `used` (and what they need in turn) reads."""
    kept: list[str] = []
    for line in reversed(lines):
        target = line.split(" = ", 1)[0]
        if re.search(rf"\b{target}\b", used):
            kept.insert(0, line)
            used += " " + line
    return kept


def build(graph: Graph, index: int, ops: list[Op]) -> FusedKernel:
    if ops[-1].kind in NORMS:
        return _build_row(graph, index, ops)
    made = {o for op in ops for o in op.outputs}
    inputs, chain = _chain(ops, made)
    kernel = FusedKernel(index, inputs, ops[-1].outputs[0], ops)
    loads = [f"a{i} = tl.load(I{i} + offs % M{i}, mask=mask, other=1.0).to(tl.float32)"
             for i in range(len(inputs))]
    compute = [f"{out} = {FORWARD[op.kind].format(*args, **dict(op.attrs))}"
               for op, args, out in chain]
    kernel.forward = loads + compute + [
        f"tl.store(Out + offs, {chain[-1][2]}.to(Out.dtype.element_ty), mask=mask)"]
    back, stores = _backward(chain, len(inputs))
    back.insert(0, "gout = tl.load(DOut + offs, mask=mask, other=0.0).to(tl.float32)")
    needed = " ".join(back + stores)
    recompute = _needed(compute, needed)
    reads = _needed(loads, needed + " " + " ".join(recompute))
    kernel.backward = reads + recompute + back + stores
    return kernel


def _build_row(graph: Graph, index: int, ops: list[Op]) -> FusedKernel:
    """A chain ending in a layer or RMS norm: one program per row of the last dim forward,
    one per block of rows backward."""
    *body, norm = ops
    made = {o for op in body for o in op.outputs}
    inputs, chain = _chain(body, made)
    total = sum(1 for op in graph.ops for name in op.inputs if name == norm.inputs[0])
    outputs = {name for _, name in graph.outputs}
    kernel = FusedKernel(index, inputs, norm.outputs[0], ops, norm=norm,
                         keeps_sum=total > 1 or norm.inputs[0] in outputs)
    h = chain[-1][2]
    eps = dict(norm.attrs).get("eps", 1e-5 if norm.kind == "layer_norm" else 1e-6)
    loads = [f"a{i} = tl.load(I{i} + offs % M{i}, mask=mask, other=1.0).to(tl.float32)"
             for i in range(len(inputs))]
    compute = [f"{out} = {FORWARD[op.kind].format(*args, **dict(op.attrs))}"
               for op, args, out in chain]
    stats = [f"x = tl.where(mask, {h}, 0.0)"]
    if norm.kind == "layer_norm":
        stats += ["mean = tl.sum(x, axis=0) / N", "xc = tl.where(mask, x - mean, 0.0)",
                  f"rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / N + {eps!r})",
                  "xhat = xc * rstd"]
        weights = ["w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)",
                   "b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)"]
        y = "xhat * w + b"
    else:
        stats += [f"rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + {eps!r})",
                  "xhat = x * rstd"]
        weights = ["w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)"]
        y = "xhat * w"
    keep = [f"tl.store(H + offs, {h}.to(H.dtype.element_ty), mask=mask)"] \
        if kernel.keeps_sum else []
    kernel.forward = loads + compute + keep + stats + weights + [
        f"tl.store(Y + offs, ({y}).to(Y.dtype.element_ty), mask=mask)"]
    # d(norm)/dx from dy, plus the gradient of the kept sum from its other users
    grad_norm = ["dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)", "g = dy * w"]
    sums = ["dw"]
    if norm.kind == "layer_norm":
        grad_norm += ["gout = rstd * (g - tl.sum(g, axis=0) / N - "
                      "xhat * tl.sum(g * xhat, axis=0) / N)",
                      "dw += dy * xhat", "db += dy"]
        sums.append("db")
    else:
        grad_norm += ["gout = rstd * (g - xhat * tl.sum(g * xhat, axis=0) / N)",
                      "dw += dy * xhat"]
    if kernel.keeps_sum:
        grad_norm.append("gout = gout + tl.load(DH + offs, mask=mask, other=0.0)"
                         ".to(tl.float32)")
    back, stores = _backward(chain, len(inputs))
    needed = " ".join(back + stores)
    recompute = _needed(compute, needed + f" {h}")
    reads = _needed(loads, needed + " " + " ".join(recompute))
    kernel.before_rows = weights[:1] + [f"{v} = tl.zeros([BLOCK], dtype=tl.float32)"
                                        for v in sums]
    kernel.backward = reads + recompute + stats + grad_norm + back + stores
    kernel.after_rows = [f"tl.store({v.upper()} + part * N + cols, {v}, mask=mask)"
                         for v in sums]
    return kernel


def groups(graph: Graph, ops: list[Op]) -> dict[int, list[Op]]:
    """The fused groups among `ops` (a stage's), by kernel id, members in program order."""
    out: dict[int, list[Op]] = {}
    for op in ops:
        k = op.attr("kernel")
        if k is not None:
            out.setdefault(k, []).append(op)
    return out
