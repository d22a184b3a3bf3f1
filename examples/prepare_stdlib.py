"""Real text with a real tokenizer: the Python standard library's own sources, present on every
machine that runs parc, as a training corpus.

    python examples/prepare_stdlib.py [--files N] [--vocab 2048] [--out examples/data/stdlib]

Trains a byte-level BPE tokenizer (the `tokenizers` library, as GPT-2's) on the `.py` files of
the running Python's standard library (tests and site-packages left out), then writes the
tokens in the nanoGPT layout: OUT/train.bin (the first 95% of the files, uint16), OUT/val.bin
(the rest) and OUT/train.tokenizer.json, which `parc sample` finds beside the train file.
`examples/gpt_stdlib.par` trains on them.
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parent


def sources(limit: int | None) -> list[Path]:
    """The standard library's own modules, in a fixed order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.rglob("*.py")
                   if not {"test", "tests", "site-packages", "idlelib"} & set(p.parts))
    return files[:limit] if limit else files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=None, help="only the first N files")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--out", default=str(ROOT / "data" / "stdlib"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = []
    for path in sources(args.files):
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue  # a few modules are not UTF-8
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    assert tokenizer.get_vocab_size() <= 65536, "uint16 tokens"
    cut = max(1, len(texts) * 95 // 100)
    for name, part in (("train", texts[:cut]), ("val", texts[cut:])):
        ids = [i for enc in tokenizer.encode_batch(part) for i in enc.ids]
        np.array(ids, dtype=np.uint16).tofile(out / f"{name}.bin")
        print(f"{name}: {len(part)} files, {len(ids)} tokens -> {out / f'{name}.bin'}")
    tokenizer.save(str(out / "train.tokenizer.json"))
    print(f"tokenizer: {tokenizer.get_vocab_size()} tokens -> {out / 'train.tokenizer.json'}")


if __name__ == "__main__":
    main()
