"""A run folder, the one reader and writer of its files:

    config.json           the TrainConfig with the resolved device, loader mode and features, + world, the
                          command line, git commit, package versions, host, start and end times
    log.csv               the chapter's format: "epoch","set","loss","acc", a train and a valid row per epoch,
                          then "lr","seconds","samples_per_s" (train rows; empty on valid rows)
    train.log             what `speechcls train` printed: header, one line per epoch, summary (appended)
    tensorboard/          `train --tensorboard`: the epoch scalars as TensorBoard events
    best.pt, last.pt      checkpoints (engine/checkpoint.py)
    metrics.json          test loss and accuracy, per-class accuracy, confusion, throughput
    confusion_<split>.csv one per split evaluated (rows = true class): training writes confusion_test.csv,
                          `speechcls evaluate --split S` (re)writes confusion_S.csv
    lr_find.csv           the LR finder's sweep (its own folder)
    streaming.csv, .json  `speechcls stream eval`: the threshold sweep and the operating point (infer/stream_eval.py,
                          their reader and writer); removed with the run's files, since they judge its weights

Small text files are written through a temporary file and a rename, like the checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.runtime import check_out_dir, write_text_atomic
from speechcls.store.location import Location, name

LOG_FIELDS = ("epoch", "set", "loss", "acc")  # the chapter's columns, always first
# after them: the LR at the epoch's end, its wall time and throughput (train rows; a log.csv from before has none)
LOG_EXTRA = ("lr", "seconds", "samples_per_s")
# the files that make a folder a run; with confusion*.csv, every file `train` writes (and removes on --overwrite)
RUN_FILES = ("config.json", "log.csv", "best.pt", "last.pt", "metrics.json", "train.log")
TENSORBOARD_DIRNAME = "tensorboard"


def default_run_dir(store: Location) -> Path:
    """runs/<store name>-<time>."""
    return Path(config.RUNS_DIRNAME) / f"{name(store)}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def file(self, name: str, hint: str = "") -> Path:
        """A file of the run that must exist; ValueError naming the folder and what makes it otherwise."""
        if not self.path.is_dir():
            raise ValueError(f"{self.path}: no such run folder")
        path = self.path / name
        if not path.is_file():
            raise ValueError(
                f"{self.path}: no {name} in this folder; {hint or 'is it a `speechcls train` run folder?'}"
            )
        return path

    def claim(self, overwrite: bool = False) -> None:
        """Make the folder ready for a new run, before anything is written. Absent or empty, it is used.
        Holding a run (any of RUN_FILES), it is refused unless `overwrite`, which removes exactly the run's
        files (RUN_FILES, confusion*.csv) and leaves anything else. A non-empty folder that holds no run
        is refused, `overwrite` or not: it is never emptied."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file, not a run folder; choose another --out")
        check_out_dir(self.path, command="train")  # never in a store or a tree
        if not self.path.exists() or not any(self.path.iterdir()):
            return
        if not any((self.path / f).is_file() for f in RUN_FILES):
            raise ValueError(
                f"{self.path} is not empty and holds no run: --overwrite only replaces a run folder's files; "
                "choose another --out"
            )
        if not overwrite:
            raise ValueError(
                f"{self.path} already holds a run: `--resume {self.path}` continues it, --overwrite replaces it"
            )
        events = self.path.glob(f"{TENSORBOARD_DIRNAME}/events.out.tfevents.*")  # else two runs' curves in one
        judged = [self.path / "streaming.csv", self.path / "streaming.json"]  # of the weights being replaced
        own = [*(self.path / f for f in RUN_FILES), *self.path.glob("confusion*.csv"), *judged, *self.temps(), *events]
        for path in own:
            try:
                if path.is_file():
                    path.unlink()
            except OSError as e:
                raise ValueError(f"cannot remove {path} to replace the run: {e.strerror or e}") from e

    def temps(self) -> list[Path]:
        """Temporary files of the run's own files (atomic_write's `.<name>.<random>.tmp`) that a kill during
        their write left behind; never another file's."""
        names = (*RUN_FILES, "confusion_*.csv")
        return sorted({p for n in names for p in self.path.glob(f".{n}.*.tmp") if p.is_file()})

    def remove_temps(self) -> None:
        """Remove what `temps` finds: a resumed run's first step (claim removes them with the run's files)."""
        for path in self.temps():
            path.unlink(missing_ok=True)

    # --- config.json, metrics.json ------------------------------------------------------------------
    def write_config(self, cfg: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / "config.json", json.dumps(cfg, indent=1) + "\n")

    def write_metrics(self, metrics: dict) -> None:
        write_text_atomic(self.path / "metrics.json", json.dumps(metrics, indent=1) + "\n")

    def read_config(self) -> dict:
        """config.json, or {} where the run has none."""
        path = self.path / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def read_metrics(self) -> dict:
        return json.loads(self.file("metrics.json", "train (or evaluate) first").read_text())

    # --- log.csv ---------------------------------------------------------------------------------------
    def write_log(self, rows: list[dict]) -> None:
        buf = io.StringIO(newline="")
        w = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC)  # the chapter's (R's) format: "set" quoted
        w.writerow(LOG_FIELDS + LOG_EXTRA)
        for r in rows:
            w.writerow([r["epoch"], r["set"], r["loss"], r["acc"], *(r.get(k) for k in LOG_EXTRA)])
        write_text_atomic(self.path / "log.csv", buf.getvalue())

    def read_log(self) -> list[dict]:
        return read_log(self.file("log.csv", "is it a `speechcls train` run folder?"))

    def has_log(self) -> bool:
        return (self.path / "log.csv").is_file()

    @property
    def train_log(self) -> Path:
        """train.log: the lines `speechcls train` printed (the CLI appends them)."""
        return self.path / "train.log"

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIRNAME

    # --- confusion matrices ---------------------------------------------------------------------------
    def confusion_path(self, split: str = "test") -> Path:
        """confusion_<split>.csv: one file per split evaluated, whoever evaluated it. Training's test
        evaluation writes confusion_test.csv and `speechcls evaluate --split test` refreshes that same file
        (the latest evaluation of the split wins), so no two files hold the same numbers."""
        split = "validation" if split == "valid" else split  # the chapter's name, as the store's reader takes it
        if split not in config.SPLITS:
            raise ValueError(f"unknown split {split!r}: choose {', '.join(config.SPLITS)}")
        return self.path / f"confusion_{split}.csv"

    def write_confusion(self, confusion: np.ndarray, classes: list[str], split: str = "test") -> Path:
        """The confusion matrix of one evaluation of `split` (rows = true class) to confusion_<split>.csv."""
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["true\\predicted", *classes])
        for c, row in zip(classes, confusion.tolist()):
            w.writerow([c, *row])
        return write_text_atomic(self.confusion_path(split), buf.getvalue())

    # --- lr_find.csv ----------------------------------------------------------------------------------
    def write_lr_find(self, lrs: list[float], losses: list[float]) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["lr", "loss"])
        w.writerows(zip(lrs, losses))
        return write_text_atomic(self.path / "lr_find.csv", buf.getvalue())


def read_log(path: str | Path) -> list[dict]:
    """A log.csv's rows: epoch, set, loss, acc, and lr, seconds, samples_per_s where the row has them (not
    on valid rows, nor in a four-column log.csv from before they were added)."""
    with open(path, newline="") as f:
        return [
            {"epoch": int(r["epoch"]), "set": r["set"], "loss": float(r["loss"]), "acc": float(r["acc"])}
            | {k: float(r[k]) for k in LOG_EXTRA if r.get(k) not in (None, "")}
            for r in csv.DictReader(f)
        ]


def read_lr_find(path: str | Path) -> tuple[list[float], list[float]]:
    """lr_find.csv (or the folder holding it) -> (lrs, losses)."""
    path = Path(path)
    if path.is_dir():
        path = path / "lr_find.csv"
    if not path.is_file():
        raise ValueError(f"{path}: no lr_find.csv; run `speechcls lr-find --out DIR` first")
    with open(path, newline="") as f:
        rows = [(float(r["lr"]), float(r["loss"])) for r in csv.DictReader(f)]
    return [r[0] for r in rows], [r[1] for r in rows]
