"""Golden diagnostics: every tests/dsl/bad/NAME.par fails `parc check` with NAME.expected.

Regenerate after an intended wording change with PARC_UPDATE_GOLDEN=1, then read the diff.
"""

import os
from pathlib import Path

import pytest

from parc.cli import main

BAD = Path(__file__).parent / "bad"
CASES = sorted(p.stem for p in BAD.glob("*.par"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", CASES)
def test_bad_spec(name, in_root, capsys):
    path = BAD.joinpath(f"{name}.par").relative_to(in_root)
    status = main(["check", str(path)])
    out = capsys.readouterr()
    assert status == 1
    assert out.out == ""
    assert "Traceback" not in out.err
    expected = BAD / f"{name}.expected"
    if os.environ.get("PARC_UPDATE_GOLDEN"):
        expected.write_text(out.err)
    assert out.err == expected.read_text()
