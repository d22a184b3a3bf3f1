"""Step metrics as TensorBoard scalars (`parc run --tensorboard DIR`), written by rank 0.
Needs the `tensorboard` package (`pip install parc[tensorboard]`)."""

from __future__ import annotations

SCALARS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
           "tokens_per_s": "perf/tokens_per_s", "mfu": "perf/mfu", "step_s": "perf/step_s",
           "eval_loss": "eval/loss"}


class Board:
    def __init__(self, directory: str):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=directory)

    def __call__(self, record: dict) -> None:
        step = record["step"]
        for key, tag in SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], step)
        if record.get("peak_mem_bytes"):
            self.writer.add_scalar("perf/peak_mem_gb", max(record["peak_mem_bytes"]) / 1e9, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
