"""metrics.jsonl: one line per step, written by rank 0 as training goes.

A resumed run continues the file of the run it resumes, cut back to the steps before the
checkpoint it starts from, so every step appears exactly once whatever point a crash fell
on: the line of a step is written before its checkpoint is saved, and a step recorded past
the newest checkpoint is cut and trained again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def cut_back(path: str | Path, first: int) -> int:
    """Keep only the records of steps before `first` (a line being written when a job died
    is dropped too); returns how many remain. Rewritten whole: a temporary file renamed."""
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) \
                and record["step"] < first:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return len(kept)


class Metrics:
    """The metrics file of one run, opened once the first step is known."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = None

    def start(self, first: int) -> None:
        """Records of steps from `first` on are this run's to write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut_back(self.path, first)
        self.file = open(self.path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
