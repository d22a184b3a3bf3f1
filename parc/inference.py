"""A checkpoint's model in this process: the spec the checkpoint was trained from (kept in its
metadata) compiled with every parallel axis removed, the checkpoint's weights loaded, for
`parc eval` (loss and perplexity on given tokens) and `parc sample` (text from a prompt).

`parc eval --skip` measures the model with whole pipeline stages omitted (as SkipPipe trains
it): the program then keeps the plan's stages, in one process, and every microbatch runs
the kept ones in order."""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from .compiler.codegen.program import write_program
from .compiler.plan import Plan, make_plan
from .compiler.reference import serial_spec, staged_spec
from .compiler.skip_check import check_paths
from .dsl.check import check_file, check_text
from .dsl.diagnostics import Diagnostic, ParcError
from .dsl.spec import Spec
from .runtime import checkpoint, functional
from .runtime.checkpoint_meta import inspect
from .runtime.programs import Program


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


def _skip_error(message: str, help: str | None = None) -> ParcError:
    return ParcError([Diagnostic("E388", message, None, help)])


def _layers(units: Sequence[str]) -> str:
    return units[0] if len(units) == 1 else f"{units[0]} .. {units[-1]}"


def parse_stages(text: str) -> tuple[int, ...]:
    """The stage indices of `--skip 1,2`, sorted, each once."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(re.fullmatch(r"-?[0-9]+", p) for p in parts):
        raise _skip_error(f"--skip {text!r}: expected stage indices separated by commas "
                          "(such as --skip 1,2)", help="`parc plan FILE` lists the stages")
    return tuple(sorted({int(p) for p in parts}))


def skipped_stages(plan: Plan, stages: Sequence[int] | None = None,
                   ratio: float | None = None) -> tuple[int, ...]:
    """The pipeline stages of `plan` an eval omits: `stages`, checked, or k = ratio * n
    (rounded half up, as skip schedules round) of the n middle stages 1..n, spread evenly:
    stages 1 + floor((i + 1/2) n / k) for i < k."""
    num = len(plan.stages)
    flag = "--skip" if ratio is None else "--skip-ratio"
    if num < 3:
        raise _skip_error(f"{flag}: the plan has {num} stage{'s' * (num != 1)}, and the first "
                          "(it reads the inputs) and the last (it computes the loss) are "
                          "never skipped", help="skipping needs a plan of 3 stages or more "
                          "(pp >= 3 in the spec's mesh)")
    middle = list(range(1, num - 1))
    if ratio is not None:
        if not 0 <= ratio < 1:
            raise _skip_error(f"--skip-ratio {ratio:g}: expected a ratio with 0 <= R < 1")
        k = math.floor(ratio * len(middle) + 0.5)
        return tuple(middle[math.floor((i + 0.5) * len(middle) / k)] for i in range(k))
    if not stages:
        raise _skip_error("--skip: no stage given", help="`parc plan FILE` lists the stages")
    for s in stages:
        if not 0 <= s < num:
            raise _skip_error(f"--skip {s}: the plan has {num} stages, 0 .. {num - 1}")
        if s in (0, num - 1):
            what = "first stage, which reads the inputs" if s == 0 else \
                "last stage, which computes the loss"
            raise _skip_error(f"--skip {s}: stage {s} is the {what} "
                              f"({_layers(plan.stages[s].units)}): it is never skipped",
                              help=f"the middle stages are {middle[0]} .. {middle[-1]}")
    return tuple(stages)


class Loaded:
    """The checkpoint's model in one process, its weights in place: the spec given, or the one
    the checkpoint was trained from. With `skip` (stage indices) or `skip_ratio`, the plan's
    stages are kept and `skipped` of them are omitted by `forward` and `evaluate`."""

    def __init__(self, directory: str | Path, spec_file: str | Path | None = None,
                 skip: Sequence[int] | None = None, skip_ratio: float | None = None):
        assert skip is None or skip_ratio is None
        self.path, about = resolve(directory, need_spec=spec_file is None)
        self.about = about
        spec = check_file(spec_file) if spec_file is not None else \
            check_text(about["source"], about["spec"])
        self.data_path = spec.train.data.path
        self.skipped: tuple[int, ...] = ()
        self.paths: list[list[int]] | None = None  # each microbatch's stages; None: all
        if skip is None and skip_ratio is None:
            run = serial_spec(spec)  # the whole model, every layer for every token
            plan = make_plan(run)
        else:
            full = make_plan(spec)
            self.skipped = skipped_stages(full, skip, skip_ratio)
            run = staged_spec(spec, full)
            plan = make_plan(run)
            assert [s.units for s in plan.stages] == [s.units for s in full.stages]
            kept = [s for s in range(len(plan.stages)) if s not in self.skipped]
            where = "--skip" if skip is not None else f"--skip-ratio {skip_ratio:g}"
            check_paths(run, plan.graph, len(plan.stages), [kept], None, where)
            if self.skipped:
                self.paths = [kept] * run.train.microbatches
        self.units = [list(s.units) for s in plan.stages]
        self.spec: Spec = run
        self.dir = Path(tempfile.mkdtemp(prefix="parc_model_"))
        self.program = Program(write_program(plan, self.dir / "program", run.file, "torch"),
                               None)
        weights = checkpoint.export(self.path)
        wanted = self.program.copies()
        for name, copies in wanted.items():
            if name not in weights:
                raise _fail(f"{self.path} holds no parameter `{name}` of {run.file}: the "
                            "checkpoint was trained from another model (give the spec it "
                            "trained, or none to use the one it records)")
            if tuple(weights[name].shape) != tuple(copies[0].shape):
                raise _fail(f"{self.path} holds `{name}` of shape "
                            f"{list(weights[name].shape)} but {run.file} makes it "
                            f"{list(copies[0].shape)}: the checkpoint was trained from "
                            "another model")
        with torch.no_grad():
            for name, copies in wanted.items():
                for tensor in copies:
                    tensor.copy_(weights[name])
        self.inputs = self.program.spec["inputs"]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch of the program's microbatch shape (every stage not skipped,
        in order)."""
        functional.at(0, 0, training=False)
        values: list[torch.Tensor] = []
        loss = None
        with torch.no_grad():
            for stage in self.program.spec["stages"]:
                if stage["index"] in self.skipped:
                    continue
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
    return run_eval(model.program, executor, own, model.paths)


def describe_skip(model: Loaded) -> str:
    """Which stages the model omits, and their layers."""
    if not model.skipped:
        return f"skipped no stage (of {len(model.units)})"
    plural = "s" * (len(model.skipped) > 1)
    return (f"skipped stage{plural} {', '.join(map(str, model.skipped))} of "
            f"{len(model.units)} ({'; '.join(_layers(model.units[s]) for s in model.skipped)})")


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
