"""The trainer: the chapter's recipe on CPU, its files, early stopping, resume, lr-find, evaluate,
and learning on real speech (FSDD digits) shared with the predict test."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from speechcls import config
from speechcls.cli import app
from speechcls.config import FeatureParams, TrainConfig
from speechcls.engine.fit import fit
from speechcls.engine.lr_find import lr_find
from speechcls.engine.run_dir import read_log
from speechcls.featurize import featurize
from speechcls.infer.predict import predict
from speechcls.models.seed_cnn import SeedCNN, check_input
from speechcls.runtime import Progress

from helpers import SMALL_MEL, WORDS10, InterruptAfter, fsdd_tree

# small but real: 80 mel bins x 81 frames (hop 200) is just above the CNN's 78 x 78 minimum
SMALL = SMALL_MEL


WORDS = WORDS10


@pytest.fixture(scope="module")
def tiny_store(small_store):
    """10 words of the real clips: 74 train, 12 validation, 14 test (conftest's shared store)."""
    return small_store()


def cfg_for(store, **kw):
    return TrainConfig(store=str(store), device="cpu", batch_size=32, **kw)


def test_seed_cnn_shapes():
    m = SeedCNN(2, 35).eval()
    assert m(torch.zeros(1, 2, 257, 101)).shape == (1, 35)  # batch size 1 works (flatten, not squeeze)
    assert m(torch.zeros(3, 2, 78, 78)).shape == (3, 35)
    widths = [layer.out_channels for layer in m.features if isinstance(layer, torch.nn.Conv2d)]
    assert widths == [32, 64, 128, 256, 512]
    assert sum(isinstance(layer, torch.nn.MaxPool2d) for layer in m.features) == 4
    with pytest.raises(ValueError, match="78"):
        check_input(40, 101)


def test_two_epochs_write_the_run_folder(tiny_store, tmp_path):
    run = tmp_path / "run"
    metrics = fit(cfg_for(tiny_store, epochs=2), run)
    assert {"log.csv", "best.pt", "last.pt", "metrics.json", "confusion_test.csv", "config.json"} <= {
        p.name for p in run.iterdir()
    }
    lines = (run / "log.csv").read_text().splitlines()
    assert (
        lines[0].startswith('"epoch","set","loss","acc",')  # the chapter's columns first (then lr, seconds, ...)
        and lines[1].startswith('1,"train",')
        and lines[2].startswith('1,"valid",')
    )
    assert [(r["epoch"], r["set"]) for r in read_log(run / "log.csv")] == [
        (1, "train"),
        (1, "valid"),
        (2, "train"),
        (2, "valid"),
    ]
    m = json.loads((run / "metrics.json").read_text())
    for key in ("test_loss", "test_acc", "per_class_acc", "confusion", "classes", "epochs_run", "train_samples_per_s"):
        assert key in m
    assert m == metrics and m["epochs_run"] == 2 and m["classes"] == list(WORDS)
    conf = np.array(m["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == m["test_samples"] == 14
    assert abs(np.trace(conf) / conf.sum() - m["test_acc"]) < 1e-12
    with open(run / "confusion_test.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == list(WORDS) and [int(v) for v in rows[1][1:]] == m["confusion"][0]
    ckpt = torch.load(run / "last.pt", weights_only=True)  # tensors and plain types only: no code in the file
    assert {"model", "optimizer", "scheduler", "epoch", "rng_ranks", "config", "model_name", "in_shape"} <= set(ckpt)
    assert ckpt["format"] == 2 and ckpt["model_name"] == "seed"
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
        fit(cfg, tmp_path / "cut", progress=InterruptAfter(ends=1))
    assert [r["epoch"] for r in read_log(tmp_path / "cut" / "log.csv")] == [1, 1]
    resumed = fit(cfg, tmp_path / "cut", resume=True)
    assert abs(resumed["test_loss"] - whole["test_loss"]) <= 1e-6
    assert resumed["test_acc"] == whole["test_acc"] and resumed["confusion"] == whole["confusion"]
    a, b = read_log(tmp_path / "whole" / "log.csv"), read_log(tmp_path / "cut" / "log.csv")
    assert [(r["epoch"], r["set"]) for r in a] == [(r["epoch"], r["set"]) for r in b]
    assert all(abs(x["loss"] - y["loss"]) <= 1e-6 for x, y in zip(a, b))


def test_too_small_features_are_refused_before_training(mini_root, tmp_path):
    store = featurize(FeatureParams("mel", n_mels=40), mini_root, out=tmp_path / "m40.zarr", device="cpu").store
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
    assert r["suggested_max_lr"] == pytest.approx(r["min_loss_lr"] / 10)
    out = CliRunner().invoke(
        app,
        [
            "lr-find",
            "--store",
            str(tiny_store),
            "--out",
            str(tmp_path / "cli"),
            "--steps",
            "12",
            "--device",
            "cpu",
            "--batch-size",
            "32",
        ],
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "cli" / "lr_find.csv").read_text() == (
        tmp_path / "lr" / "lr_find.csv"
    ).read_text()  # seeded: the same sweep
    assert (tmp_path / "cli" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_evaluate_and_errors(tiny_store, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "--store",
            str(tiny_store),
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--out",
            str(run),
        ],
    )
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


def test_an_existing_run_is_refused_unless_overwrite_and_other_folders_always(tiny_store, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    train = ["train", "--store", str(tiny_store), "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--out"]
    assert runner.invoke(app, [*train, str(run)]).exit_code == 0
    (run / "notes.txt").write_text("mine")  # not a run file: kept by --overwrite
    (run / "confusion_validation.csv").write_text("from evaluate")  # a run file: removed by --overwrite
    files = lambda folder: {p.name: p.read_bytes() for p in folder.iterdir()}  # noqa: E731
    before = files(run)
    r = runner.invoke(app, [*train, str(run)])
    line = r.output.replace("\n", "")
    assert r.exit_code == 1 and f"{run} already holds a run" in line and "Traceback" not in line, r.output
    assert f"`--resume {run}` continues it, --overwrite replaces it" in line
    assert files(run) == before
    with pytest.raises(ValueError, match="already holds a run"):
        fit(cfg_for(tiny_store, epochs=1), run)
    assert files(run) == before
    r = runner.invoke(app, [*train, str(run), "--overwrite", "--seed", "1"])
    assert r.exit_code == 0 and "test loss" in r.output, r.output
    after = files(run)
    assert after["notes.txt"] == b"mine" and "confusion_validation.csv" not in after
    assert {"config.json", "log.csv", "best.pt", "last.pt", "metrics.json", "confusion_test.csv"} <= set(after)
    assert json.loads(after["config.json"])["seed"] == 1 and after["last.pt"] != before["last.pt"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("not a run")
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, [*train, str(foreign), *extra])
        line = r.output.replace("\n", "")
        assert r.exit_code == 1 and f"{foreign} is not empty and holds no run" in line, r.output
        assert "choose another --out" in line
    assert files(foreign) == {"data.csv": b"not a run"}
    r = runner.invoke(app, ["train", "--resume", str(run), "--overwrite", "--device", "cpu"])
    assert r.exit_code != 0 and "--resume continues a run" in r.output and files(run) == after, r.output


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
    store = featurize(FeatureParams("mel", **SMALL), root, out=base / "mel.zarr", device="cpu").store
    cfg = TrainConfig(store=str(store), device="cpu", epochs=FSDD_EPOCHS, min_epochs=FSDD_EPOCHS)
    return root, base / "run", fit(cfg, base / "run")


FSDD_PER_DIGIT = 30  # 6 speakers x 10 digits x 30: 1,200 train, 300 validation, 300 test clips
FSDD_EPOCHS = 8


@pytest.mark.slow
def test_learns_spoken_digits(fsdd_run):
    _, _, metrics = fsdd_run
    # seen here: test accuracy 0.587 after 8 epochs (2 cores, torch 2.14.1); chance is 0.10
    assert metrics["test_acc"] >= 0.35
    assert metrics["epochs_run"] == FSDD_EPOCHS


@pytest.mark.slow
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
    assert r.exit_code == 1, r.output  # one file failed: non-zero, and the other is still predicted
    out = json.loads(r.output[r.output.index("[") :])
    assert out[0]["top"][0]["label"] in fsdd_run[2]["classes"] and "error" in out[1]


def test_models_are_built_by_name_and_an_unknown_name_is_refused():
    from speechcls.models import build_model, names

    assert "seed" in names() and "bcresnet-8" in names()
    model = build_model("seed_cnn", (2, 80, 81), 12, dropout2d=0.1, dropout=0.3)
    assert model(torch.zeros(2, 2, 80, 81)).shape == (2, 12)
    with pytest.raises(ValueError, match="unknown model 'resnet9': choose one of .*seed_cnn"):
        build_model("resnet9", (1, 80, 81), 12)
    with pytest.raises(ValueError, match="too small"):
        build_model("seed_cnn", (1, 40, 101), 12)


def test_a_format_1_checkpoint_still_loads_and_its_last_pt_is_refused_by_name(tiny_store, tmp_path):
    """Checkpoints written before the model registry (format 1): best.pt held plain types and the seed
    CNN's weights; last.pt also held numpy RNG objects, which a weights-only load refuses."""
    import random
    from dataclasses import asdict

    from speechcls.engine import checkpoint
    from speechcls.models.seed_cnn import SeedCNN

    torch.manual_seed(0)
    model = SeedCNN(1, len(WORDS)).eval()
    cfg = asdict(TrainConfig(store=str(tiny_store), device="cpu", batch_size=32))
    cfg["split"] = cfg.pop("split_kind")  # format 1's name for the split kind, and no model name
    del cfg["model"]
    meta = {"config": cfg, "classes": list(WORDS), "params": asdict(FeatureParams("mel", **SMALL)), "in_channels": 1,
            "n_classes": len(WORDS), "format": 1}  # fmt: skip
    old = tmp_path / "old"
    old.mkdir()
    torch.save({**meta, "model": model.state_dict(), "epoch": 1, "valid_loss": 2.0}, old / "best.pt")
    loaded, ckpt = checkpoint.load_model(old)
    x = torch.randn(3, 1, 80, 81)
    assert torch.equal(loaded(x), model(x)) and ckpt["config"]["split_kind"] == "official"
    r = CliRunner().invoke(app, ["evaluate", str(old), "--device", "cpu"])
    assert r.exit_code == 0 and "confusion matrix" in r.output, r.output
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({**meta, "model": model.state_dict(), "epoch": 1, "rng": rng}, old / "last.pt")
    with pytest.raises(ValueError, match="last.pt: refused.*format-1 last.pt"):
        checkpoint.load(old / "last.pt")
    r = CliRunner().invoke(app, ["train", "--resume", str(old), "--device", "cpu"])
    assert r.exit_code == 1 and "format-1 last.pt" in r.output.replace("\n", " "), r.output


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    from speechcls.engine import checkpoint

    marker = tmp_path / "ran"
    torch.save({"model": _RunsCode(marker), "format": 2}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt: refused"):
        checkpoint.load(tmp_path / "evil.pt")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "evil.pt"), str(tmp_path / "x.wav")])
    assert r.exit_code == 1 and "refused" in r.output
    assert not marker.exists()


# --- one bad sample must not poison a run -------------------------------------------------------------


def _store_with_an_inf_row(store, dst):
    """A copy of `store` whose first training row holds inf features (what a float file out of [-1, 1]
    gave before featurize refused it). Returns (the copy, that row)."""
    import shutil

    import zarr

    from speechcls.store.format import SPLIT_CODES

    shutil.copytree(store, dst)
    g = zarr.open_group(str(dst), mode="r+")
    row = int(np.flatnonzero((g["split"][:] == SPLIT_CODES["train"]) & g["valid"][:])[0])
    feats = g["features"][row]
    feats[0, 0, 0] = np.inf
    g["features"][row] = feats
    return dst, row


def test_a_non_finite_loss_in_epoch_1_stops_the_run_with_no_checkpoint(tiny_store, tmp_path):
    from speechcls.loader import epoch_permutation
    from speechcls.store.reader import open_store, split_rows

    store, row = _store_with_an_inf_row(tiny_store, tmp_path / "inf.zarr")
    run = tmp_path / "run"
    args = ["train", "--store", str(store), "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--out", str(run)]
    r = CliRunner().invoke(app, args)
    message = " ".join(r.output.split())
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    # the batch holding the row is the first bad step: rows in the epoch-1 order, 8 a batch
    train = split_rows(open_store(store), "train")
    step = int(np.flatnonzero(train[epoch_permutation(len(train), 0, 1)] == row)[0]) // 8
    assert f"not finite at epoch 1, step {step} (batch index" in message, message
    named = message.split("store rows ")[1].split(";")[0].split(", ")
    assert str(row) in named and len(named) == 8
    assert "no checkpoint was written" in message and "--max-lr" in message and "speechcls info" in message
    # nothing of the run's results: no checkpoint (none from NaN), no log row, no test metrics
    assert not {"best.pt", "last.pt", "log.csv", "metrics.json"} & {p.name for p in run.iterdir()}


class _KeepCheckpoints(Progress):
    """Remembers the bytes of the checkpoints and log as each epoch ends."""

    def __init__(self, run):
        self.run, self.seen = run, []

    def end(self, **summary) -> None:
        self.seen.append({name: (self.run / name).read_bytes() for name in ("best.pt", "last.pt", "log.csv")})


def _poison(monkeypatch, store, at_call: int) -> dict:
    """Patches the trainer's step so that its `at_call`-th call (from 1) gets one example set to inf: a
    real NaN loss, and NaN weights from there on. Returns the calls made and the store row poisoned."""
    from speechcls.engine import fit as fitting

    from helpers import read_store

    s = read_store(store)
    keys = {s["features"][i].astype(np.float32).tobytes(): i for i in range(len(s["path"]))}
    seen = {"calls": 0, "row": None}
    original = fitting.train_step

    def step(model, optimizer, scheduler, scaler, cfg, device, x, y, weight=1.0):
        seen["calls"] += 1
        if seen["calls"] == at_call:
            seen["row"] = keys[x[0].numpy().tobytes()]
            x = x.clone()
            x[0] = np.inf
        return original(model, optimizer, scheduler, scaler, cfg, device, x, y, weight)

    monkeypatch.setattr(fitting, "train_step", step)
    return seen


@pytest.mark.parametrize("mode", ["device", "stream"])
def test_a_nan_loss_in_epoch_2_keeps_epoch_1s_files_and_names_the_batch(tiny_store, tmp_path, monkeypatch, mode):
    """3 steps an epoch (74 rows, 32 a batch): epoch 2's step 1 is poisoned; the end of the epoch sees it."""
    seen = _poison(monkeypatch, tiny_store, at_call=3 + 2)
    run = tmp_path / "run"
    progress = _KeepCheckpoints(run)
    with pytest.raises(ValueError, match=r"not finite at epoch 2, step 1 \(batch index") as e:
        fit(cfg_for(tiny_store, epochs=3, loader=mode), run, progress=progress)
    assert seen["calls"] == 6
    assert f"store rows {seen['row']}, " in str(e.value) and "last.pt and log.csv are those of epoch 1" in str(e.value)
    assert len(progress.seen) == 1  # epoch 2 never ended: no validation, no checkpoint (best.pt not from NaN)
    assert {name: (run / name).read_bytes() for name in progress.seen[0]} == progress.seen[0]
    assert [(r["epoch"], r["set"]) for r in read_log(run / "log.csv")] == [(1, "train"), (1, "valid")]
    assert not (run / "metrics.json").exists()


def test_a_nan_loss_stops_the_run_at_the_next_sync_within_20_steps(tiny_store, tmp_path, monkeypatch):
    """2 a batch: 37 steps an epoch; step 3 is poisoned, the loop reads the loss at step 20 and stops there,
    naming step 3 (found in the per-step losses), not step 19."""
    seen = _poison(monkeypatch, tiny_store, at_call=4)
    with pytest.raises(ValueError, match=r"not finite at epoch 1, step 3 \(batch index.*no checkpoint was written"):
        fit(replace(cfg_for(tiny_store, epochs=2), batch_size=2), tmp_path / "run")
    assert seen["calls"] == 20


def test_predict_gives_a_file_with_non_finite_features_or_probabilities_an_error(
    tiny_store, words10_tree, tmp_path, monkeypatch
):
    import soundfile as sf

    from speechcls.infer import predict as predicting

    from helpers import write_wav

    run = tmp_path / "run"
    fit(cfg_for(tiny_store, epochs=1), run)
    good = sorted((words10_tree / "cat").glob("*.wav"))[:2]
    audio, rate = sf.read(good[0], dtype="float32")
    audio[100] = 1e30
    huge = write_wav(tmp_path / "huge.wav", audio, rate, "FLOAT")
    results = predict(run, [good[0], huge, good[1]], top=3, device="cpu")
    assert [r["file"] for r in results] == [str(good[0]), str(huge), str(good[1])]
    assert results[1] == {
        "file": str(huge),
        "error": "features are not finite (peak sample 1e+30: a float file out of [-1, 1]?)",
    }
    for r in (results[0], results[2]):
        probs = [t["prob"] for t in r["top"]]
        assert "error" not in r and len(probs) == 3 and all(np.isfinite(probs)) and 0 < sum(probs) <= 1 + 1e-6
    # a model that gives NaN (finite features): the file gets an error, not "nan" probabilities
    load = predicting.load_model

    def nan_model(path, device):
        model, ckpt = load(path, device)
        return (lambda x: model(x) * float("nan")), ckpt

    monkeypatch.setattr(predicting, "load_model", nan_model)
    (r,) = predict(run, [good[0]], device="cpu")
    assert r == {"file": str(good[0]), "error": "the model's probabilities are not finite (NaN or inf)"}


# --- every expected failure is one line --------------------------------------------------------------


def _error_line(result) -> str:
    """The one line a failed command prints: `error: ...` on stderr, exit status 1, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_damaged_checkpoint_is_one_error_line_for_predict_and_evaluate(tmp_path):
    import random
    from dataclasses import asdict

    from speechcls.engine import checkpoint

    params = FeatureParams("mel", **SMALL)
    meta = {"config": asdict(TrainConfig(device="cpu")), "classes": ["a", "b", "c"], "params": asdict(params),
            "in_shape": list(params.shape), "n_classes": 3, "model_name": "seed_cnn",
            "model_cfg": {"dropout2d": 0.2, "dropout": 0.5}}  # fmt: skip
    real = checkpoint.save(tmp_path / "real.pt", {**meta, "model": SeedCNN(1, 3).state_dict(), "epoch": 1})
    assert checkpoint.load_model(real)[1]["classes"] == ["a", "b", "c"]  # whole, it loads
    data = real.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    damaged = {
        tmp_path / "truncated.pt": data[: len(data) // 2],
        tmp_path / "empty.pt": b"",
        tmp_path / "garbage.pt": random.Random(0).randbytes(5000),
        run / "best.pt": data[:1000],
    }
    wav = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(wav, np.zeros(16_000, dtype=np.float32), 16_000)
    runner = CliRunner()
    for path, content in damaged.items():
        path.write_bytes(content)
        given = run if path.parent == run else path
        for args in (["predict", str(given), str(wav)], ["evaluate", str(given)]):
            line = _error_line(runner.invoke(app, [*args, "--device", "cpu"]))
            assert line.startswith(f"error: {path}: "), line


def test_an_out_that_cannot_be_written_is_one_error_line(tiny_store, tmp_path, monkeypatch):
    import errno
    import os

    runner = CliRunner()
    train = ["train", "--store", str(tiny_store), "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--out"]
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "run"
    line = _error_line(runner.invoke(app, [*train, str(out)]))
    assert line.startswith(f"error: cannot access {out}") and "Not a directory; a part of the path is a file" in line
    # a read-only file system (root writes through permission bits, so the mount is simulated at mkdir)
    ro, real_mkdir = tmp_path / "ro", os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(ro)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    line = _error_line(runner.invoke(app, [*train, str(ro / "run")]))
    assert line.startswith(f"error: cannot write {ro}") and "Read-only file system; choose another --out" in line


def test_a_class_without_training_clips_is_warned_of_before_training(mini_root, tmp_path):
    from speechcls.engine.fit import build

    from helpers import copy_tree

    root = copy_tree(mini_root, tmp_path / "tree", per_word=4, words=("bed", "bird", "cat"))
    cats = sorted(f"cat/{p.name}" for p in (root / "cat").glob("*.wav"))
    (root / config.VALIDATION_LIST).write_text("\n".join(cats[:2]) + "\n")
    (root / config.TESTING_LIST).write_text("\n".join(cats[2:]) + "\n")
    store = featurize(FeatureParams("mel", **SMALL), root, out=tmp_path / "mel.zarr", device="cpu").store
    with pytest.warns(UserWarning, match="no training clips for class 'cat' in the official split"):
        build(cfg_for(store))
    r = CliRunner().invoke(
        app, ["train", "--store", str(store), "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "run")]
    )
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    warned = [i for i, line in enumerate(lines) if "no training clips" in line]
    assert len(warned) == 1 and lines[warned[0]].startswith("warning: no training clips for class 'cat'"), r.output
    assert warned[0] < next(i for i, line in enumerate(lines) if line.startswith("epoch 1"))
