"""The module instances of a def's calls in a generated stage (codegen/calls.py writes them).

`self.block = Calls({0: Block0(...)}, {i: Block1(...) for i in range(1, 9)})` holds one
module per call, by the call's index: `block[3]` is `self.block[3]`, and its parameter
`block[3].attn.q.w` the attribute path `block.3.attn_q_w` (what plan.json's `attr` says and
`nn.Module.get_parameter` reads). A stage's STEP_SYNC and GATHERED listings are its own
entries followed by its instances' (`nested`), their attributes under their paths.
"""

from __future__ import annotations

from torch import nn


class Calls(nn.ModuleDict):
    """One module per call of a def, by the call's index (an int, or a range as a slice)."""

    def __init__(self, *parts: dict[int, nn.Module]) -> None:
        super().__init__({str(i): m for part in parts for i, m in part.items()})

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, slice):
            return [super(Calls, self).__getitem__(str(i))
                    for i in range(key.start, key.stop)]
        return super().__getitem__(str(key))


def nested(module: nn.Module, table: str) -> tuple:
    """The entries of `table` (STEP_SYNC, GATHERED) of every instance the module holds, in
    the order they were made, each attribute under its path (`block.3.ln1_w`)."""
    out: list[tuple] = []
    for name, child in module.named_children():
        if isinstance(child, Calls):
            for key, instance in child.items():
                out += [(f"{name}.{key}.{entry[0]}", *entry[1:])
                        for entry in getattr(instance, table, ())]
    return tuple(out)


def lend(module: nn.Module, name: str, value: object) -> None:
    """Give every instance the module holds the same `value` as attribute `name` (the
    stage's gathers, which index the stage's GATHERED)."""
    for child in module.children():
        if isinstance(child, Calls):
            for instance in child.values():
                setattr(instance, name, value)
