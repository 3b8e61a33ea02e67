"""The trainer: the chapter's recipe on CPU, its files, early stopping, resume, lr-find, evaluate,
and learning on real speech (FSDD digits) shared with the predict test."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import copy_tree, fsdd_tree
from speechcls import config
from speechcls.cli import app
from speechcls.config import FeatureParams, TrainConfig
from speechcls.featurize import featurize
from speechcls.models import SeedCNN, check_input
from speechcls.train import fit, lr_find, predict, read_log

# small but real: 80 mel bins x 81 frames (hop 200) is just above the CNN's 78 x 78 minimum
SMALL = dict(n_mels=80, hop_length=200)


WORDS = ("bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy")


@pytest.fixture(scope="module")
def tiny_store(mini_root, tmp_path_factory):
    """10 words of the real clips: 74 train, 12 validation, 14 test."""
    base = tmp_path_factory.mktemp("train")
    tree = copy_tree(mini_root, base / "tree", words=WORDS)
    return featurize(FeatureParams("mel", **SMALL), tree, out=base / "mel.zarr", backend="torch", device="cpu").path


def cfg_for(store, **kw):
    return TrainConfig(store=str(store), device="cpu", batch_size=32, **kw)


def test_seed_cnn_shapes():
    m = SeedCNN(2, 35).eval()
    assert m(torch.zeros(1, 2, 257, 101)).shape == (1, 35)  # batch size 1 works (flatten, not squeeze)
    assert m(torch.zeros(3, 2, 78, 78)).shape == (3, 35)
    widths = [l.out_channels for l in m.features if isinstance(l, torch.nn.Conv2d)]
    assert widths == [32, 64, 128, 256, 512]
    assert sum(isinstance(l, torch.nn.MaxPool2d) for l in m.features) == 4
    with pytest.raises(ValueError, match="78"):
        check_input(40, 101)


def test_two_epochs_write_the_run_folder(tiny_store, tmp_path):
    run = tmp_path / "run"
    metrics = fit(cfg_for(tiny_store, epochs=2), run)
    assert {"log.csv", "best.pt", "last.pt", "metrics.json", "confusion.csv", "config.json"} <= {p.name for p in run.iterdir()}
    lines = (run / "log.csv").read_text().splitlines()
    assert lines[0] == '"epoch","set","loss","acc"' and lines[1].startswith('1,"train",') and lines[2].startswith('1,"valid",')
    assert [(r["epoch"], r["set"]) for r in read_log(run / "log.csv")] == [(1, "train"), (1, "valid"), (2, "train"), (2, "valid")]
    m = json.loads((run / "metrics.json").read_text())
    for key in ("test_loss", "test_acc", "per_class_acc", "confusion", "classes", "epochs_run", "train_samples_per_s"):
        assert key in m
    assert m == metrics and m["epochs_run"] == 2 and m["classes"] == list(WORDS)
    conf = np.array(m["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == m["test_samples"] == 14
    assert abs(np.trace(conf) / conf.sum() - m["test_acc"]) < 1e-12
    with open(run / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == list(WORDS) and [int(v) for v in rows[1][1:]] == m["confusion"][0]
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config"} <= set(ckpt)
    assert TrainConfig(**ckpt["config"]).epochs == 2  # the run can be rebuilt from its file
    assert json.loads((run / "config.json").read_text())["batch_size"] == 32


def test_early_stopping_fires_and_min_epochs_holds_it(tiny_store, tmp_path):
    # the chapter's max LR on tiny data: the validation loss spikes while the LR climbs (seen here at epoch 2)
    wild = cfg_for(tiny_store, epochs=5, patience=1)
    early = fit(wild, tmp_path / "a")
    assert early["stopped_early"] and early["epochs_run"] < 5
    held = fit(replace(wild, min_epochs=5), tmp_path / "b")
    assert held["epochs_run"] == 5 and not held["stopped_early"]


def test_resume_equals_uninterrupted(tiny_store, tmp_path):
    cfg = cfg_for(tiny_store, epochs=3)
    whole = fit(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "cut", stop_after=1)
    assert [r["epoch"] for r in read_log(tmp_path / "cut" / "log.csv")] == [1, 1]
    resumed = fit(cfg, tmp_path / "cut", resume=True)
    assert abs(resumed["test_loss"] - whole["test_loss"]) <= 1e-6
    assert resumed["test_acc"] == whole["test_acc"] and resumed["confusion"] == whole["confusion"]
    a, b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "cut" / "log.csv")
    assert [(r["epoch"], r["set"]) for r in a] == [(r["epoch"], r["set"]) for r in b]
    assert all(abs(x["loss"] - y["loss"]) <= 1e-6 for x, y in zip(a, b))


def test_too_small_features_are_refused_before_training(mini_root, tmp_path):
    store = featurize(FeatureParams("mel", n_mels=40), mini_root, out=tmp_path / "m40.zarr", device="cpu").path
    with pytest.raises(ValueError, match="too small"):
        fit(cfg_for(store, epochs=1), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_lr_find_writes_csv_png_and_suggests(tiny_store, tmp_path):
    r = lr_find(cfg_for(tiny_store), tmp_path / "lr", steps=12)
    with open(tmp_path / "lr" / "lr_find.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["lr", "loss"] and 2 <= len(rows) <= 12
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    assert (tmp_path / "lr" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["suggested_max_lr"] == pytest.approx(r["min_loss_lr"] / 10)


def test_cli_train_evaluate_and_errors(tiny_store, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--store", str(tiny_store), "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert "epoch 1: train loss" in r.output and "test loss" in r.output
    r = runner.invoke(app, ["evaluate", str(run), "--split", "validation", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "validation: 12 clips" in r.output and (run / "confusion_validation.csv").is_file()
    for args, message in [
        (["train", "--store", str(tiny_store), "--precision", "bf16", "--device", "cpu"], "needs CUDA"),
        (["train", "--store", str(tiny_store), "--split", "halves"], "--split"),
        (["train", "--store", str(tmp_path / "nope.zarr")], "not a speechcls feature store"),
        (["train", "--resume", str(tmp_path / "empty")], "no last.pt"),
        (["evaluate", str(tmp_path / "missing")], "no such checkpoint"),
        (["lr-find", "--store", str(tiny_store), "--start-lr", "1", "--end-lr", "0.1"], "start-lr"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, (args, r.output)


# --- learning on real speech ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fsdd_run(fsdd_root, tmp_path_factory):
    """FSDD as an official-layout tree (FSDD's own split: index 0-4 test, 5-9 validation), mel
    features, the chapter's recipe on CPU. Shared by the learning and predict tests."""
    base = tmp_path_factory.mktemp("fsdd")
    root = fsdd_tree(fsdd_root, base / "tree", per_digit=FSDD_PER_DIGIT)
    rels = sorted(str(p.relative_to(root)) for p in root.glob("*/*.wav"))
    index = lambda rel: int(rel.rsplit("_", 1)[1].removesuffix(".wav"))  # noqa: E731
    (root / config.TESTING_LIST).write_text("".join(r + "\n" for r in rels if index(r) < 5))
    (root / config.VALIDATION_LIST).write_text("".join(r + "\n" for r in rels if 5 <= index(r) < 10))
    store = featurize(FeatureParams("mel", **SMALL), root, out=base / "mel.zarr", device="cpu").path
    cfg = TrainConfig(store=str(store), device="cpu", epochs=FSDD_EPOCHS, min_epochs=FSDD_EPOCHS)
    return root, base / "run", fit(cfg, base / "run")


FSDD_PER_DIGIT = 30  # 6 speakers x 10 digits x 30: 1,200 train, 300 validation, 300 test clips
FSDD_EPOCHS = 8


def test_learns_spoken_digits(fsdd_run):
    _, _, metrics = fsdd_run
    # seen here: test accuracy 0.587 after 8 epochs (2 cores, torch 2.14.1); chance is 0.10
    assert metrics["test_acc"] >= 0.35
    assert metrics["epochs_run"] == FSDD_EPOCHS


def test_predict_gives_a_real_clip_its_label(fsdd_run, tmp_path):
    root, run, _ = fsdd_run
    test_files = sorted(root.glob("*/*_nohash_[0-4].wav"))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"no audio here")
    results = predict(run, [*test_files, bad], top=3, device="cpu")
    assert results[-1]["file"] == str(bad) and "not readable audio" in results[-1]["error"]
    right = [r["top"][0]["label"] == f.parent.name for r, f in zip(results, test_files)]
    assert np.mean(right) >= 0.35 and any(right)
    for r in results[:-1]:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    r = CliRunner().invoke(app, ["predict", str(run), str(test_files[0]), str(bad), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("[") :])
    assert out[0]["top"][0]["label"] in fsdd_run[2]["classes"] and "error" in out[1]
