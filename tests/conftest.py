import os

# The Triton interpreter must be chosen before anything imports triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def in_root(monkeypatch):
    """Run from the repository root, so diagnostics name files as the golden files do."""
    monkeypatch.chdir(ROOT)
    return ROOT
