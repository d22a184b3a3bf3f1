"""Boxes of tensors, and reading one box of a tensor from a file without reading the rest.

A box is a (start, length) per dim. `box` is the one a shard's (dim, ways, index) cuts leave
(torch.chunk's pieces, as `params.shard` cuts them) and `overlap` the part two boxes share,
so a rank can tell which saved pieces hold its slice and where. `read_box` reads a box of a
row-major tensor stored at some offset of a file one contiguous run at a time: the bytes of
the box and no others. `safetensors_header` says where each tensor of a safetensors file
lies (a checkpoint's data files are safetensors files, and so are Hugging Face weights).
"""

from __future__ import annotations

import itertools
import json
import math

import torch

Box = tuple[tuple[int, int], ...]

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 << 20  # safetensors' own limit


def box(shape, splits) -> Box:
    """The box of `shape` that the (dim, ways, index) cuts, applied in order, leave."""
    starts, lengths = [0] * len(shape), list(shape)
    for dim, ways, index in splits:
        size = -(-lengths[dim] // ways)
        start = min(index * size, lengths[dim])
        starts[dim] += start
        lengths[dim] = min(size, lengths[dim] - start)
    return tuple(zip(starts, lengths))


def whole(shape) -> Box:
    return tuple((0, n) for n in shape)


def overlap(a: Box, b: Box) -> Box | None:
    """The box both hold, or None when they share no element."""
    out = []
    for (start_a, length_a), (start_b, length_b) in zip(a, b, strict=True):
        start, end = max(start_a, start_b), min(start_a + length_a, start_b + length_b)
        if end <= start:
            return None
        out.append((start, end - start))
    return tuple(out)


def volume(b: Box) -> int:
    return math.prod(n for _, n in b)


def relative(inner: Box, outer: Box) -> tuple[int, ...]:
    """Where `inner` starts inside `outer`."""
    return tuple(s - o for (s, _), (o, _) in zip(inner, outer, strict=True))


def read_box(stream, offset: int, shape, dtype: torch.dtype, starts, lengths) -> torch.Tensor:
    """The box (`starts`, `lengths`) of the row-major `shape` tensor of `dtype` whose bytes
    begin at `offset` of the seekable binary `stream`, read run by run."""
    out = torch.empty(tuple(lengths), dtype=dtype)
    if out.numel() == 0:
        return out
    itemsize = out.element_size()
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    inner = len(shape)  # dims from `inner` on are whole in the box
    while inner > 0 and starts[inner - 1] == 0 and lengths[inner - 1] == shape[inner - 1]:
        inner -= 1
    if inner == 0:
        outer, run = (), out.numel()
    else:  # dim inner - 1 is cut: each run is a stretch of it and every dim after whole
        outer = tuple(range(s, s + n) for s, n in zip(starts[:inner - 1], lengths[:inner - 1]))
        run = lengths[inner - 1] * strides[inner - 1]
    first = starts[inner - 1] * strides[inner - 1] if inner else 0
    data = memoryview(out.view(-1).view(torch.uint8).numpy())
    at, size = 0, run * itemsize
    for index in itertools.product(*outer):
        element = first + sum(i * s for i, s in zip(index, strides))
        stream.seek(offset + element * itemsize)
        _read_into(stream, data[at:at + size])
        at += size
    return out


def _read_into(stream, buffer: memoryview) -> None:
    done = 0
    while done < len(buffer):
        count = stream.readinto(buffer[done:])
        if not count:
            raise EOFError(f"the file ends {len(buffer) - done} bytes before the tensor does")
        done += count


def safetensors_header(stream) -> tuple[int, dict[str, tuple[str, tuple[int, ...], int, int]]]:
    """(where the data begins, name -> (dtype, shape, begin, end)) of a safetensors file,
    begin and end relative to the data. Raises ValueError when it is none."""
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the file is shorter than a safetensors header")
    size = int.from_bytes(head, "little")
    if size > MAX_HEADER:
        raise ValueError(f"its header claims {size} bytes: it is no safetensors file")
    text = stream.read(size)
    if len(text) < size:
        raise EOFError(f"the file ends inside its {size}-byte header")
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("its header is not JSON: it is no safetensors file") from None
    if not isinstance(header, dict):
        raise ValueError("its header is no JSON object: it is no safetensors file")
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), \
                entry["data_offsets"]
            valid = isinstance(dtype, str) and all(isinstance(n, int) and n >= 0
                                                   for n in (*shape, begin, end))
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"its entry `{str(name)[:60]}` is no tensor: it is no "
                             "safetensors file")
        out[name] = (dtype, shape, begin, end)
    return 8 + size, out
