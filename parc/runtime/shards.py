"""Reassembles full tensors from the per-rank dumps of a step (parameters and gradients)."""

from __future__ import annotations

from pathlib import Path

import torch


def assemble(directory: str | Path, what: str) -> tuple[float, dict[str, torch.Tensor]]:
    """(loss, name -> full tensor) from `{what}_rank*.pt` written by `train(..., dump=)`."""
    pieces: dict[str, dict[tuple, torch.Tensor]] = {}
    loss = None
    for path in sorted(Path(directory).glob(f"{what}_rank*.pt")):
        data = torch.load(path, weights_only=False)
        loss = data["loss"]
        for name, (tensor, splits) in data["shards"].items():
            if tensor is None:
                continue
            key = tuple((dim, ways, index) for dim, ways, index in splits)
            pieces.setdefault(name, {})[key] = tensor
    return loss, {name: _join(parts) for name, parts in pieces.items()}


def _join(parts: dict[tuple, torch.Tensor]) -> torch.Tensor:
    """Undo the splits, last axis first: chunks along a dim are concatenated in index order."""
    if list(parts) == [()]:
        return parts[()]
    depth = len(next(iter(parts)))
    for level in reversed(range(depth)):
        grouped: dict[tuple, list] = {}
        for key, tensor in parts.items():
            grouped.setdefault(key[:level], []).append((key[level], tensor))
        parts = {}
        for prefix, items in grouped.items():
            items.sort(key=lambda kv: kv[0][2])
            dim = items[0][0][0]
            parts[prefix] = torch.cat([t for _, t in items], dim=dim)
    return parts[()]
