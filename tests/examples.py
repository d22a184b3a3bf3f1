"""The example specs the tests take: every examples/*.par that runs on a fresh clone."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# gpt_stdlib reads token files examples/prepare_stdlib.py makes first (not in the repository):
# tests/test_stdlib_example.py prepares them and checks, trains and samples it
NEEDS_PREPARED_DATA = {"gpt_stdlib"}
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.par")
                  if p.stem not in NEEDS_PREPARED_DATA)
