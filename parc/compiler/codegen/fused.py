"""Triton kernels for the fuse pass's groups: one forward and one backward kernel per group.

The forward loads every operand once (expanded to the group's shape), runs the chain in f32 and
stores the result. The backward recomputes the chain, then walks it in reverse applying each
op's derivative, and stores one gradient per operand; the autograd wrapper sums a gradient back
to its operand's shape when the operand was broadcast (a bias).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..ir import Graph, Op

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
    inputs: list[str]  # IR names of the operands, in kernel order
    output: str
    ops: list[Op]
    forward: list[str] = field(default_factory=list)  # kernel body lines
    backward: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"fused_{self.index}"


def build(graph: Graph, index: int, ops: list[Op]) -> FusedKernel:
    made = {o for op in ops for o in op.outputs}
    inputs: list[str] = []
    for op in ops:
        for name in op.inputs:
            if name not in made and name not in inputs:
                inputs.append(name)
    kernel = FusedKernel(index, inputs, ops[-1].outputs[0], ops)
    local = {name: f"a{i}" for i, name in enumerate(inputs)}
    chain: list[tuple[Op, list[str], str]] = []
    for k, op in enumerate(ops):
        args = [local[n] for n in op.inputs]
        local[op.outputs[0]] = f"v{k}"
        chain.append((op, args, f"v{k}"))
    loads = [f"a{i} = tl.load(I{i} + offs, mask=mask, other=1.0).to(tl.float32)"
             for i in range(len(inputs))]
    compute = [f"{out} = {FORWARD[op.kind].format(*args, **dict(op.attrs))}"
               for op, args, out in chain]
    kernel.forward = loads + compute + [
        f"tl.store(Out + offs, {chain[-1][2]}.to(Out.dtype.element_ty), mask=mask)"]
    grads = {chain[-1][2]: "gout"}
    back = ["gout = tl.load(DOut + offs, mask=mask, other=0.0).to(tl.float32)"]
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
              for i in range(len(inputs))]
    needed = " ".join(back + stores)
    recompute = []
    for line in reversed(compute):  # only what the derivatives read
        target = line.split(" = ", 1)[0]
        if re.search(rf"\b{target}\b", needed):
            recompute.insert(0, line)
            needed += " " + line
    reads = [line for line in loads if re.search(rf"\b{line.split(' = ', 1)[0]}\b", needed)]
    kernel.backward = reads + recompute + back + stores
    return kernel


def groups(graph: Graph, ops: list[Op]) -> dict[int, list[Op]]:
    """The fused groups among `ops` (a stage's), by kernel id, members in program order."""
    out: dict[int, list[Op]] = {}
    for op in ops:
        k = op.attr("kernel")
        if k is not None:
            out.setdefault(k, []).append(op)
    return out
