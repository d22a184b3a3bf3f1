"""Training data: a deterministic synthetic language, or tokens from a file (nanoGPT layout).

Every rank builds the same global batch for a step and keeps its slice, so the program and
the single-process reference see identical data.
"""

from __future__ import annotations

import numpy as np
import torch


def synthetic_sequences(seed: int, step: int, batch: int, length: int, vocab: int) -> np.ndarray:
    """[batch, length] tokens of a learnable language: each token mostly follows from the one
    before (x' = 7x + 1 mod vocab), with one in eight drawn at random."""
    rng = np.random.default_rng([seed, step])
    x = np.empty((batch, length), dtype=np.int64)
    x[:, 0] = rng.integers(0, vocab, batch)
    noise = rng.random((batch, length)) < 0.125
    random_tokens = rng.integers(0, vocab, (batch, length))
    for t in range(1, length):
        x[:, t] = np.where(noise[:, t], random_tokens[:, t], (7 * x[:, t - 1] + 1) % vocab)
    return x


class Data:
    """Global batches for the model's inputs, described as name -> (dtype, shape, high)."""

    def __init__(self, kind: str, seed: int, inputs: dict, batch: int, path: str | None = None,
                 file_dtype: str = "u16"):
        self.kind, self.seed, self.inputs, self.batch = kind, seed, inputs, batch
        self.tokens = None
        if kind == "tokens":
            dtype = {"u16": np.uint16, "i32": np.int32, "i64": np.int64}[file_dtype]
            self.tokens = np.memmap(path, dtype=dtype, mode="r")

    def global_batch(self, step: int) -> dict[str, torch.Tensor]:
        int_inputs = [n for n, d in self.inputs.items() if d["dtype"].startswith(("i", "u"))]
        out: dict[str, torch.Tensor] = {}
        if int_inputs:
            first = self.inputs[int_inputs[0]]
            seq = first["shape"][1] if len(first["shape"]) > 1 else 1
            high = min(d["high"] for n, d in self.inputs.items() if n in int_inputs)
            x = self._sequences(step, seq + 1, high)
            for name in int_inputs:
                if len(self.inputs[name]["shape"]) == 1:  # one label per sample
                    out[name] = torch.from_numpy(x[:, -1].copy())
                    continue
                # `= next(tokens)`: the same sequences one position on; others unshifted
                shifted = self.inputs[name].get("next_of") is not None
                out[name] = torch.from_numpy((x[:, 1:] if shifted else x[:, :-1]).copy())
        gen = torch.Generator().manual_seed(self.seed * 7919 + step)
        for name, d in self.inputs.items():
            if name not in out:
                out[name] = torch.randn([self.batch] + list(d["shape"][1:]), generator=gen)
        return out

    def _sequences(self, step: int, length: int, vocab: int) -> np.ndarray:
        if self.tokens is None:
            return synthetic_sequences(self.seed, step, self.batch, length, vocab)
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - length, self.batch)
        return np.stack([self.tokens[s:s + length].astype(np.int64) for s in starts])


def local_slice(tensor: torch.Tensor, microbatch: int, num_microbatches: int,
                splits: list[tuple[int, int, int]]) -> torch.Tensor:
    """Microbatch `microbatch` of a global batch, cut to this rank's shard."""
    out = tensor.chunk(num_microbatches, dim=0)[microbatch]
    for dim, ways, index in splits:
        out = out.chunk(ways, dim=dim)[index]
    return out.contiguous()
