"""A checkpoint's model in this process: the spec the checkpoint was trained from (kept in its
metadata) compiled with every parallel axis removed, the checkpoint's weights loaded, for
`parc eval` (loss and perplexity on given tokens) and `parc sample` (text from a prompt)."""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from .compiler.codegen.program import write_program
from .compiler.plan import make_plan
from .compiler.reference import serial_spec
from .dsl.check import check_file, check_text
from .dsl.diagnostics import Diagnostic, ParcError
from .dsl.spec import Spec
from .runtime import checkpoint, functional
from .runtime.checkpoint_meta import inspect
from .runtime.train import Program


def _fail(message: str) -> ParcError:
    return ParcError([Diagnostic("E386", message, None)])


def resolve(directory: str | Path, need_spec: bool = True) -> tuple[Path, dict]:
    """A checkpoint (or the `to` directory of `checkpoint every N to`: its latest), checked
    complete (E392/E393, as a resume checks it), and the settings it records."""
    from .api import find_checkpoint

    path = find_checkpoint(directory)
    about = inspect(path).about
    if need_spec and not about.get("source"):
        raise _fail(f"{path} was written by an older parc: its metadata has no spec")
    return path, about


class Loaded:
    """The checkpoint's model in one process, its weights in place: the spec given, or the one
    the checkpoint was trained from."""

    def __init__(self, directory: str | Path, spec_file: str | Path | None = None):
        self.path, about = resolve(directory, need_spec=spec_file is None)
        self.about = about
        spec = check_file(spec_file) if spec_file is not None else \
            check_text(about["source"], about["spec"])
        self.data_path = spec.train.data.path
        serial = serial_spec(spec)  # the whole model, every layer for every token
        self.spec: Spec = serial
        self.dir = Path(tempfile.mkdtemp(prefix="parc_model_"))
        self.program = Program(write_program(make_plan(serial), self.dir / "program",
                                             serial.file, "torch"), None)
        weights = checkpoint.export(self.path)
        with torch.no_grad():
            for name, copies in self.program.copies().items():
                for tensor in copies:
                    tensor.copy_(weights[name])
        self.inputs = self.program.spec["inputs"]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch of the program's microbatch shape (every stage in order)."""
        functional.at(0, 0, training=False)
        values: list[torch.Tensor] = []
        loss = None
        with torch.no_grad():
            for stage in self.program.spec["stages"]:
                module = self.program.modules[stage["index"]]
                outputs = module(*values, *[batch[n] for n in stage["data_inputs"]])
                if stage["loss"]:
                    loss = outputs[-1]
                values = list(outputs[:len(stage["live_out"])])
        return loss


@contextmanager
def _logits_of_the_loss():
    """The logits the model's cross-entropy is given, captured (its loss is a dummy)."""
    captured: list[torch.Tensor] = []
    real = torch.nn.functional.cross_entropy

    def capture(logits, targets, *args, **kwargs):
        captured.append(logits.detach())
        return logits.sum() * 0.0

    torch.nn.functional.cross_entropy = capture
    try:
        yield captured
    finally:
        torch.nn.functional.cross_entropy = real


def evaluate(model: Loaded, tokens_path: str | None, batches: int | None) -> float:
    """The mean loss over eval batches of the train block's batch size: from `tokens_path`
    (a token file of the spec's dtype), or the spec's own eval data (`eval_data`, or the last
    tenth of its token file, or another stream of its synthetic language), the batches the
    trainer evaluates."""
    from .runtime.executor import Executor
    from .runtime.train import evaluate as run_eval

    train = model.program.spec["train"]
    own = train.get("eval") or {"data": train["data"], "batches": 4,
                                "holdout": train["data"]["kind"] == "tokens"}
    if tokens_path is not None:
        own = {"data": {"kind": "tokens", "seed": 0, "path": str(tokens_path),
                        "dtype": train["data"].get("dtype", "u16")}, "holdout": False,
               "batches": own["batches"]}
    if batches is not None:
        own = {**own, "batches": batches}
    executor = Executor(model.program.spec, model.program.modules, None, torch.device("cpu"))
    return run_eval(model.program, executor, own)


class Tokenizer:
    """The tokenizer next to the spec's token file: NAME.vocab.json (characters, from
    examples/prepare_text.py) or NAME.tokenizer.json (a `tokenizers` BPE)."""

    def __init__(self, data_path: str | None):
        if not data_path:
            raise _fail("the checkpoint's spec trains on synthetic data: there is no text to "
                        "sample (train on `tokens(\"file.bin\")` with its tokenizer beside it)")
        base = Path(data_path)
        chars, bpe = base.with_suffix(".vocab.json"), base.with_suffix(".tokenizer.json")
        self.chars = self.bpe = None
        if chars.exists():
            self.chars = json.loads(chars.read_text())
            self.index = {c: i for i, c in enumerate(self.chars)}
        elif bpe.exists():
            from tokenizers import Tokenizer as Bpe

            self.bpe = Bpe.from_file(str(bpe))
        else:
            raise _fail(f"no tokenizer beside {base}: expected {chars.name} or {bpe.name}")

    @property
    def size(self) -> int:
        return self.bpe.get_vocab_size() if self.bpe is not None else len(self.chars)

    def encode(self, text: str) -> list[int]:
        if self.bpe is not None:
            return self.bpe.encode(text).ids
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            raise _fail(f"the prompt has characters the model never saw: {''.join(unknown)!r}")
        return [self.index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        if self.bpe is not None:
            return self.bpe.decode(ids)
        return "".join(self.chars[i] for i in ids if i < len(self.chars))


def sample(model: Loaded, prompt: str, tokens: int, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0) -> str:
    """The prompt and `tokens` more, each drawn from the model's next-token distribution
    (greedy at temperature 0) over the last `seq` tokens, as nanoGPT samples."""
    tokenizer = Tokenizer(model.data_path)
    ids = tokenizer.encode(prompt) or [0]
    ints = [n for n, d in model.inputs.items() if d["dtype"].startswith(("i", "u"))]
    source = next(n for n in ints if model.inputs[n].get("next_of") is None)
    shape = model.inputs[source]["shape"]
    rows = shape[0] // model.program.spec["train"]["microbatches"]
    seq = shape[1]
    vocab = min(model.inputs[source]["high"], tokenizer.size)  # rows past it are padding
    gen = torch.Generator().manual_seed(seed)
    for _ in range(tokens):
        window = ids[-seq:]
        padded = torch.tensor(window + [0] * (seq - len(window))).expand(rows, seq)
        batch = {n: padded.clone() for n in ints}
        for n, d in model.inputs.items():
            if n not in batch:
                batch[n] = torch.zeros([rows] + d["shape"][1:])
        with _logits_of_the_loss() as captured:
            model.forward(batch)
        logits = captured[-1].view(rows, seq, -1)[0, len(window) - 1, :vocab].float()
        if temperature == 0:
            ids.append(int(logits.argmax()))
            continue
        logits = logits / temperature
        if top_k is not None:
            cut = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < cut, float("-inf"))
        ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
    return tokenizer.decode(ids)
