"""Boxes and box reads: a shard's box is the piece `params.shard` cuts, a box read from a
safetensors file is that slice of the tensor and reads its bytes alone, and a checkpoint load
plans reads of the saved pieces' parts that cover a rank's slice."""

import io
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from parc.runtime.checkpoint import _parts
from parc.runtime.checkpoint_meta import CheckpointError
from parc.runtime.params import shard
from parc.runtime.slices import box, overlap, read_box, safetensors_header, volume

SPLITS = [[], [(0, 2, 1)], [(1, 4, 3)], [(0, 2, 0), (0, 2, 1)], [(1, 2, 1), (0, 2, 0)],
          [(0, 1, 0), (1, 2, 0)], [(0, 3, 2)], [(2, 2, 1), (1, 3, 1)]]


def as_slices(b) -> tuple:
    return tuple(slice(s, s + n) for s, n in b)


@pytest.mark.parametrize("splits", SPLITS)
def test_the_box_of_a_shard_is_what_shard_cuts(splits):
    full = torch.arange(6 * 12 * 4).reshape(6, 12, 4)
    assert torch.equal(full[as_slices(box(full.shape, splits))], shard(full, splits))


def test_uneven_cuts_follow_chunk():
    full = torch.arange(10)
    for index in range(3):
        assert torch.equal(full[as_slices(box((10,), [(0, 3, index)]))],
                           full.chunk(3)[index])


def test_overlap():
    assert overlap(((0, 4), (2, 4)), ((2, 4), (0, 3))) == ((2, 2), (2, 1))
    assert overlap(((0, 4),), ((4, 4),)) is None
    assert volume(((1, 3), (0, 5))) == 15


class Counting(io.BytesIO):
    """Counts the bytes read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.count = 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        self.count += n
        return n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
def test_a_box_read_from_a_safetensors_file_is_the_slice_and_no_more(dtype):
    rng = random.Random(0)
    tensors = {"a": torch.randn(7, 5, 6).to(dtype), "b": torch.randn(9).to(dtype),
               "s": torch.tensor(3.0).to(dtype)}
    data = save(tensors)
    start, entries = safetensors_header(io.BytesIO(data))
    assert set(entries) == set(tensors)
    for _ in range(40):
        name = rng.choice(["a", "b", "s"])
        shape = tensors[name].shape
        starts = [rng.randrange(n) for n in shape]
        lengths = [rng.randint(1, n - s) for s, n in zip(starts, shape)]
        if rng.random() < 0.3:  # trailing dims whole: longer runs
            starts[-1:], lengths[-1:] = [0] * len(shape[-1:]), list(shape[-1:])
        stream = Counting(data)
        dt, file_shape, begin, _ = entries[name]
        got = read_box(stream, start + begin, file_shape, dtype, starts, lengths)
        want = tensors[name][tuple(slice(s, s + n) for s, n in zip(starts, lengths))]
        assert torch.equal(got, want)
        assert stream.count == want.numel() * want.element_size()


def test_a_file_cut_short_is_an_error():
    data = save({"a": torch.zeros(100)})
    start, entries = safetensors_header(io.BytesIO(data))
    with pytest.raises(EOFError):
        read_box(io.BytesIO(data[:-8]), start, (100,), torch.float32, [90], [10])
    with pytest.raises(EOFError):
        safetensors_header(io.BytesIO(data[:12]))
    with pytest.raises(ValueError, match="no safetensors file"):
        safetensors_header(io.BytesIO(b"\x04\x00\x00\x00\x00\x00\x00\x00abcd"))


def test_the_parts_a_rank_reads_cover_its_slice_once():
    info = {"shape": [8, 6], "cuts": ["d0w2i0_d1w2i0", "d0w2i0_d1w2i1", "d0w2i1_d1w2i0",
                                      "d0w2i1_d1w2i1"]}
    mine = box((8, 6), [(1, 3, 1)])  # columns 2..4 of every row: all four pieces
    parts = _parts(Path("ck"), "param/w", info, mine)
    assert [p[0] for p in parts] == [f"param/w/{c}" for c in info["cuts"]]
    assert sum(volume(tuple(zip(inside, lengths))) for _, inside, _, lengths in parts) == 16
    assert parts[0][1:] == ((0, 2), (0, 0), (4, 1))  # rows 0..4, column 2 of piece (0, 0)
    assert parts[1][1:] == ((0, 0), (0, 1), (4, 1))
    # a tied parameter saved cut two ways: one way is read, not both
    tied = {"shape": [8, 6], "cuts": ["full", "d0w2i0", "d0w2i1"]}
    assert [p[0] for p in _parts(Path("ck"), "param/w", tied, mine)] == ["param/w/full"]
    with pytest.raises(CheckpointError, match="lacks pieces of `param/w`"):
        _parts(Path("ck"), "param/w", {"shape": [8, 6], "cuts": ["d0w2i0"]}, mine)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_a_checkpoint_of_torch_save_files_still_loads(tmp_path):
    """parc wrote torch.save-format data files before it read slices; those still load (each
    overlapping piece read whole) and export."""
    import json

    import torch.distributed.checkpoint as dcp
    from safetensors import safe_open

    from parc.runtime import checkpoint, optim
    from parc.runtime.programs import Program
    from parc.runtime.train import run_steps

    from .serial import serial_program

    directory = serial_program("gpt_tiny.par", tmp_path,
                               f'checkpoint every 2 to "{tmp_path / "ck"}"')
    run_steps(Program(directory, None), 2)
    new = tmp_path / "ck" / "step_2"
    state = {}
    for data in new.glob("*.distcp"):
        with safe_open(str(data), "pt") as f:
            state.update({key: f.get_tensor(key) for key in f.keys()})
    old = tmp_path / "old"
    dcp.save(state, checkpoint_id=str(old), no_dist=True)
    meta = json.loads((new / "parc_meta.json").read_text())
    del meta["format"]
    (old / "parc_meta.json").write_text(json.dumps(meta))
    loaded = []
    for path in (new, old):
        program = Program(directory, None)
        optimizer = optim.build(program)
        assert checkpoint.load(path, program.named_shards(), program.copies(), optimizer) == 2
        loaded.append({name: (param.detach().clone(), optimizer.state[param]["exp_avg_sq"])
                       for name, (param, _) in program.named_shards().items()})
    assert loaded[0].keys() == loaded[1].keys()
    for name, (param, moment) in loaded[0].items():
        assert torch.equal(param, loaded[1][name][0]) and torch.equal(moment, loaded[1][name][1])
        assert torch.equal(param, state[f"param/{name}/full"])
    exported = checkpoint.export(old)
    assert all(torch.equal(exported[name], loaded[0][name][0]) for name in exported)
