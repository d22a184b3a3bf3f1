"""The V-shaped zero-bubble families (ZB-V, V-Half: two stages per rank in a V) meet the
contract on four pipeline ranks: GPT and LLaMA, two steps, against the single-process
reference (loss, every gradient, every updated parameter)."""

from pathlib import Path

import pytest

from parc.runtime.programs import load_program

from .harness import compare, compile_pair, launch, variant

pytestmark = pytest.mark.slow


def test_v_schedules_match_the_reference(tmp_path: Path):
    compiled = {}
    for family in ("zb_v", "v_half"):
        for example in ("gpt_tiny.par", "llama_tiny.par"):
            name = f"{family}_{example.split('_')[0]}"
            compiled[name] = compile_pair(variant(example, mesh="pp = 4", schedule=family,
                                                  layers=8), name, tmp_path)
            ranks = load_program(compiled[name][0])["schedule"]["stage_rank"]
            assert ranks == [0, 1, 2, 3, 3, 2, 1, 0]  # the V
    launch([(d, tmp_path / name / "dump") for name, (d, _) in compiled.items()], steps=2)
    for name, (_, ref) in compiled.items():
        compare(tmp_path / name / "dump", ref, tmp_path / name / "refdump", steps=2)
