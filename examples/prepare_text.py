"""Tokenise a text file by characters into the flat token file `parc run` trains on.

    python examples/prepare_text.py examples/data/pipelines.txt examples/data/pipelines.bin

Writes the tokens as uint16 (the nanoGPT layout) and NAME.vocab.json with the characters, so
samples can be decoded. The vocabulary is every character of the text, sorted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(source: str, out: str) -> None:
    text = Path(source).read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    tokens = np.array([index[c] for c in text], dtype=np.uint16)
    tokens.tofile(out)
    Path(out).with_suffix(".vocab.json").write_text(json.dumps(chars))
    print(f"{len(tokens)} tokens, {len(chars)} distinct characters -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
