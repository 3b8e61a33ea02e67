"""A run explains itself: the header before training and the summary after it (stdout / stderr and
train.log), config.json's resolved values and provenance, log.csv's extra columns (an old four-column
log.csv still read and resumed), plain progress lines off a terminal, TensorBoard events."""

import csv
import io
import json
import re
import socket
import sys
from datetime import datetime

import pytest
import torch
from typer.testing import CliRunner

import speechcls
from speechcls.cli import app
from speechcls.config import TrainConfig
from speechcls.engine.fit import fit
from speechcls.engine.run_dir import read_log
from speechcls.models import build_model

from helpers import InterruptAfter

EXTRA = ["lr", "seconds", "samples_per_s"]


def train_args(store, run, *extra):
    return ["train", "--store", str(store), "--batch-size", "32", "--device", "cpu", "--out", str(run), *extra]


@pytest.fixture(scope="module")
def cli_run(small_store, tmp_path_factory):
    """One 2-epoch run through the CLI (CliRunner: not a terminal), with --tensorboard."""
    pytest.importorskip("tensorboard")
    run = tmp_path_factory.mktemp("run-output") / "run"
    r = CliRunner().invoke(app, train_args(small_store(), run, "--epochs", "2", "--tensorboard"))
    assert r.exit_code == 0, r.output
    return small_store(), run, r.output


def test_header_and_summary_say_what_was_trained_and_what_came_of_it(cli_run):
    store, run, output = cli_run
    lines = output.splitlines()
    m = json.loads((run / "metrics.json").read_text())
    # the parameter count from the model built here, not from the code under test's header
    params = sum(p.numel() for p in build_model("seed_cnn", (1, 80, 81), 10).parameters())
    for expected in (
        f"store: {store} (official split kind; mel features, input 1 x 80 x 81 raw)",
        "task: words; examples: train 74, validation 12, test 14 (10 classes)",
        "recipe chapter: Adam, one-cycle max LR 0.01, patience 3; 2 epochs at most, batch 32, seed 0; "
        "augmentation: none",
    ):
        assert expected in lines, (expected, output)
    model_line = next(line for line in lines if line.startswith("model: "))
    assert re.fullmatch(
        rf"model: seed, {params:,} parameters, [\d.,]+ M multiply-adds per example; device cpu, "
        rf"{m['loader_mode']} loader, fp32",
        model_line,
    ), model_line
    assert m["parameters"] == params and m["macs"] > params  # a conv net reuses each weight many times
    assert lines.index(f"store: {store} (official split kind; mel features, input 1 x 80 x 81 raw)") < min(
        i for i, line in enumerate(lines) if line.startswith("epoch ")
    )
    summary = next(line for line in lines if line.startswith("summary: "))
    assert f"test loss {m['test_loss']:.4f} acc {m['test_acc']:.4f} (chance 0.1000, 10 classes)" in summary
    assert f"best epoch {m['best_epoch']} of 2" in summary
    assert f"{m['train_samples_per_s']:,.0f} train samples/s" in summary
    wall = float(re.search(r"wall time ([\d.]+) s", summary).group(1))
    assert 0 < wall < 600
    assert f"run folder: {run}" in lines
    assert lines[-1].startswith(f"open {run / 'log.csv'} (curves) and {run / 'metrics.json'}")  # no report.html yet


def test_no_line_is_wrapped_off_a_terminal(cli_run):
    _, _, output = cli_run
    epochs = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    for line in epochs:  # rich would cut these at 80 columns: both ends of the line are on it
        assert len(line) > 80 and "train loss" in line and "samples/s" in line, line
    summary = [line for line in output.splitlines() if "summary: test loss" in line]
    assert len(summary) == 1 and "loader on cpu" in summary[0]


def test_config_json_holds_resolved_values_and_provenance(cli_run):
    _, run, _ = cli_run
    cfg = json.loads((run / "config.json").read_text())
    m = json.loads((run / "metrics.json").read_text())
    assert cfg["device"] == "cpu" and cfg["features"] == "mel"
    assert cfg["loader"] == m["loader_mode"] and cfg["loader"] in ("device", "host", "stream")
    assert cfg["argv"] == sys.argv  # CliRunner leaves sys.argv as it was: the command line is recorded as given
    assert cfg["versions"]["speechcls"] == speechcls.__version__ and "torch" in cfg["versions"]
    assert cfg["host"] == socket.gethostname()
    start, end = datetime.fromisoformat(cfg["start"]), datetime.fromisoformat(cfg["end"])
    assert start.tzinfo is not None and start <= end
    assert cfg["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", cfg["git_commit"])
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert TrainConfig(**ckpt["config"]).batch_size == 32  # the checkpoint keeps the TrainConfig fields only


def test_log_csv_adds_lr_seconds_and_throughput_after_the_chapters_columns(cli_run):
    _, run, _ = cli_run
    with open(run / "log.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["epoch", "set", "loss", "acc", *EXTRA]
    rows = read_log(run / "log.csv")
    train = [r for r in rows if r["set"] == "train"]
    assert len(train) == 2 and all(set(EXTRA) <= set(r) for r in train)
    for r in train:
        assert r["seconds"] > 0 and r["samples_per_s"] == pytest.approx(74 / r["seconds"], rel=1e-6)
        assert 0 < r["lr"] <= 0.01
    assert train[1]["lr"] < train[0]["lr"]  # one-cycle over 2 epochs: the LR falls in the second
    assert all(not set(EXTRA) & set(r) for r in rows if r["set"] == "valid")


def test_train_log_keeps_what_was_printed(cli_run):
    _, run, output = cli_run
    kept = (run / "train.log").read_text().splitlines()
    printed = output.splitlines()
    assert [line for line in kept if line.startswith("epoch ")] == [
        line for line in printed if line.startswith("epoch ")
    ]
    assert kept[0].startswith("store: ") and kept[-3].startswith("summary: ") and kept[-1].startswith("open ")


def test_tensorboard_writes_the_epoch_scalars(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, _ = cli_run
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    log = read_log(run / "log.csv")
    train_loss = [e.value for e in acc.Scalars("loss/train")]
    assert train_loss == pytest.approx([r["loss"] for r in log if r["set"] == "train"], rel=1e-6)
    assert [e.step for e in acc.Scalars("acc/validation")] == [1, 2]
    assert {"lr", "samples_per_s/train", "loss/validation", "acc/train"} <= set(acc.Tags()["scalars"])


def test_a_missing_tensorboard_is_one_line_naming_the_extra(small_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: import raises ImportError
    run = tmp_path / "run"
    r = CliRunner().invoke(app, train_args(small_store(), run, "--epochs", "1", "--tensorboard"))
    assert r.exit_code == 1 and "pip install 'speechcls[tb]'" in r.output and "Traceback" not in r.output
    assert not run.exists()  # refused before anything was written


def test_resume_appends_to_train_log_and_reads_an_old_four_column_log(small_store, tmp_path):
    from speechcls.report.plots import curves

    store, run = small_store(), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit(TrainConfig(store=str(store), device="cpu", batch_size=32, epochs=2), run, progress=InterruptAfter(ends=1))
    old = read_log(run / "log.csv")
    buf = io.StringIO(newline="")
    w = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC)  # the log.csv of a run from before the extra columns
    w.writerow(["epoch", "set", "loss", "acc"])
    w.writerows([r["epoch"], r["set"], r["loss"], r["acc"]] for r in old)
    (run / "log.csv").write_text(buf.getvalue())
    (run / "train.log").write_text("a line from the first session\n")
    r = CliRunner().invoke(app, ["train", "--resume", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    kept = (run / "train.log").read_text().splitlines()
    assert kept[0] == "a line from the first session"
    assert f"resuming {run} at epoch 2" in kept and any(line.startswith("epoch 2: train loss") for line in kept)
    rows = read_log(run / "log.csv")
    assert [(r["epoch"], r["set"]) for r in rows] == [(1, "train"), (1, "valid"), (2, "train"), (2, "valid")]
    assert rows[0]["loss"] == old[0]["loss"] and "lr" not in rows[0] and "lr" in rows[2]
    assert curves(run, tmp_path / "curves.png").is_file()


def test_off_a_terminal_progress_prints_a_line_per_tenth_and_no_bar():
    from rich.console import Console

    from speechcls.cli.progress import RichProgress

    out = io.StringIO()
    with RichProgress(Console(file=out, width=80), unit="clips") as p:  # a StringIO is not a terminal
        p.start("featurize mel", 200)
        for _ in range(40):
            p.advance(5)
        p.end()
    lines = out.getvalue().splitlines()
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == [str(10 * k) for k in range(1, 11)]
    assert lines[-1].startswith("featurize mel: 100% (200 of 200 clips, ")
    out = io.StringIO()
    with RichProgress(Console(file=out), unit="samples", on_end=lambda s: f"epoch {s['n']} done") as p:
        p.start("epoch 1", 10)
        for _ in range(10):
            p.advance(1)
        p.end(n=1)
    assert out.getvalue() == "epoch 1 done\n"  # the caller's line per task, nothing per tenth
