"""Training data: a deterministic synthetic language, or tokens from a file (nanoGPT layout).

Every row of a step's global batch is drawn from its own seed (the data seed, the step, the
row), so a rank makes only the rows of its microbatches and of its slice of them (a
data-parallel rank reads its share, nothing more), and the single-process reference, which
makes every row, sees the same ones.
"""

from __future__ import annotations

import numpy as np
import torch


def _row_rng(seed: int, step: int, row: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, row])


def synthetic_sequences(seed: int, step: int, rows: list[int], length: int,
                        vocab: int) -> np.ndarray:
    """[len(rows), length] tokens of a learnable language: each token mostly follows from the
    one before (x' = 7x + 1 mod vocab), with one in eight drawn at random."""
    x = np.empty((len(rows), length), dtype=np.int64)
    noise = np.empty((len(rows), length), dtype=bool)
    random_tokens = np.empty((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        rng = _row_rng(seed, step, row)
        x[i, 0] = rng.integers(0, vocab)
        noise[i] = rng.random(length) < 0.125
        random_tokens[i] = rng.integers(0, vocab, length)
    for t in range(1, length):
        x[:, t] = np.where(noise[:, t], random_tokens[:, t], (7 * x[:, t - 1] + 1) % vocab)
    return x


def local_rows(batch: int, microbatch: int, num_microbatches: int,
               splits: list[tuple[int, int, int]]) -> list[int]:
    """The global batch rows of a microbatch that a rank holds: the microbatch's, cut by every
    split of dim 0 (outer axis first)."""
    rows = list(range(batch))
    per = batch // num_microbatches
    rows = rows[microbatch * per:(microbatch + 1) * per]
    for dim, ways, index in splits:
        if dim == 0:
            size = len(rows) // ways
            rows = rows[index * size:(index + 1) * size]
    return rows


def _cut(tensor: torch.Tensor, splits: list[tuple[int, int, int]]) -> torch.Tensor:
    """This rank's slice along every split dim but the batch (rows were chosen already)."""
    for dim, ways, index in splits:
        if dim != 0:
            tensor = tensor.chunk(ways, dim=dim)[index]
    return tensor.contiguous()


class Data:
    """Batches for the model's inputs, described as name -> (dtype, shape, high, next_of)."""

    def __init__(self, kind: str, seed: int, inputs: dict, batch: int, path: str | None = None,
                 file_dtype: str = "u16", part: str = "all"):
        """`part` of a token file: all of it, the first nine tenths (train, when the last
        tenth is held out for evaluation) or that last tenth (heldout)."""
        self.kind, self.seed, self.inputs, self.batch = kind, seed, inputs, batch
        self.tokens = None
        if kind == "tokens":
            dtype = {"u16": np.uint16, "i32": np.int32, "i64": np.int64}[file_dtype]
            tokens = np.memmap(path, dtype=dtype, mode="r")
            cut = len(tokens) * 9 // 10
            self.tokens = {"all": tokens, "train": tokens[:cut], "heldout": tokens[cut:]}[part]
        self._last: tuple | None = None  # (step, rows, inputs made): stages read several
        ints = [n for n, d in inputs.items() if d["dtype"].startswith(("i", "u"))]
        self.int_inputs = ints
        first = inputs[ints[0]] if ints else None
        self.seq = (first["shape"][1] if len(first["shape"]) > 1 else 1) if first else 1
        self.high = min((inputs[n]["high"] for n in ints), default=2)

    def local(self, step: int, name: str, microbatch: int, num_microbatches: int,
              splits: list[tuple[int, int, int]]) -> torch.Tensor:
        """What a rank reads of input `name` for one microbatch of a step."""
        rows = local_rows(self.batch, microbatch, num_microbatches, splits)
        return _cut(self.rows(step, rows, (name,))[name], splits)

    def global_batch(self, step: int) -> dict[str, torch.Tensor]:
        """Every row of a step (what the single-process reference and tests look at)."""
        return self.rows(step, list(range(self.batch)))

    def rows(self, step: int, rows: list[int],
             names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Inputs `names` (all of them by default) of the given rows of a step. Only what is
        asked is made: a stage that reads the tokens draws no labels, and the other way round;
        the integer inputs are made together (they are views of the same sequences)."""
        if self._last is None or self._last[:2] != (step, tuple(rows)):
            self._last = (step, tuple(rows), {})
        made = self._last[2]
        for name in names if names is not None else tuple(self.inputs):
            if name not in made:
                made.update(self._make(step, rows, name))
        return made

    def _make(self, step: int, rows: list[int], name: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if name in self.int_inputs:
            x = self._sequences(step, rows, self.seq + 1)
            for each in self.int_inputs:
                if len(self.inputs[each]["shape"]) == 1:  # one label per sample
                    out[each] = torch.from_numpy(x[:, -1].copy())
                    continue
                # `= next(tokens)`: the same sequences one position on; others unshifted
                shifted = self.inputs[each].get("next_of") is not None
                out[each] = torch.from_numpy((x[:, 1:] if shifted else x[:, :-1]).copy())
            return out
        parts = []
        for row in rows:
            gen = torch.Generator().manual_seed(self.seed * 7919 + step * 65537 + row)
            parts.append(torch.randn(list(self.inputs[name]["shape"][1:]), generator=gen))
        out[name] = torch.stack(parts) if parts else torch.empty(0)
        return out

    def _sequences(self, step: int, rows: list[int], length: int) -> np.ndarray:
        if self.tokens is None:
            return synthetic_sequences(self.seed, step, rows, length, self.high)
        last = len(self.tokens) - length
        starts = [int(_row_rng(self.seed, step, row).integers(0, last)) for row in rows]
        return np.stack([self.tokens[s:s + length].astype(np.int64) for s in starts])
