"""`speechcls train --tensorboard`: each epoch's scalars as TensorBoard events in <run>/tensorboard/
(`tensorboard --logdir runs/`). TensorBoard is an optional extra: `pip install 'speechcls[tb]'`."""

from __future__ import annotations

from pathlib import Path

from speechcls.runtime import require_extra


def check_available() -> None:
    """ValueError with the install line when torch's SummaryWriter cannot be imported; called before
    training, so a missing package never costs a run."""
    require_extra("speechcls train --tensorboard", "tb", "tensorboard")


class EpochScalars:
    """Writes an epoch's train / validation loss and accuracy, LR and train samples/s (the rows fit reports
    through Progress.end). The writer is made at the first epoch: the folder is the run's by then
    (a tensorboard/ folder made earlier would make a new --out look non-empty)."""

    def __init__(self, logdir: Path):
        self.logdir, self.writer = Path(logdir), None

    def epoch(self, summary: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is None:
            self.writer = SummaryWriter(str(self.logdir))
        t, v = summary["train"], summary["valid"]
        step = t["epoch"]
        for tag, value in (
            ("loss/train", t["loss"]),
            ("loss/validation", v["loss"]),
            ("acc/train", t["acc"]),
            ("acc/validation", v["acc"]),
            ("lr", t.get("lr")),
            ("samples_per_s/train", summary.get("samples_per_s")),
        ):
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a killed run keeps its curves up to the last epoch

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
