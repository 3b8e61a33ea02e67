"""Issue 26, part A: no command writes over what it reads (item 1), a synth word is never an option
(item 7), and the weak items of writing a run (disk full, a read-only folder, a temp file left by a
kill) and of training's options and noise (every numeric option checked at the boundary, naming it).

Each test holds a rule on several inputs, not one case: every command that writes a file the user
names, every kind of file it must not replace, every numeric option."""

import errno
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechcls.cli import app

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")


def _one_error_line(r) -> str:
    """The command failed with one `error:` line and no traceback; that line, unwrapped."""
    text = r.output.replace("\n", " ")
    assert r.exit_code == 1 and "Traceback" not in text, r.output
    assert r.output.count("error:") == 1 and "unexpected" not in text, r.output
    return text


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- item 1: a file the user names is never one the command reads, a checkpoint, a store's or a ---------
# --- tree's file, or anything else it did not write, unless --overwrite; and then atomically -----------
def _checkpoint(path: Path) -> Path:
    """A small MatchboxNet checkpoint of 3 classes in the trainer's layout (engine/setup.py's Setup.meta())."""
    from dataclasses import asdict

    import torch

    from speechcls.audio.frontend import InputSpec
    from speechcls.config import FeatureParams, TrainConfig
    from speechcls.engine import checkpoint
    from speechcls.engine.setup import model_settings
    from speechcls.models import build_model

    params = FeatureParams("mel", n_mels=40)
    cfg = TrainConfig(model="matchboxnet-3x1x64")
    torch.manual_seed(0)
    model = build_model(cfg.model, params.shape, 3, **model_settings(cfg)).eval()
    meta = {
        "config": asdict(cfg) | {"store": ""}, "task": "words", "classes": ["a", "b", "c"], "params": asdict(params),
        "input": InputSpec().to_dict(), "in_shape": list(params.shape), "n_classes": 3, "model_name": cfg.model,
        "model_cfg": model_settings(cfg), "complexity": {}, "noise": None,
    }  # fmt: skip
    return checkpoint.save(path, {**meta, "model": model.state_dict(), "epoch": 1, "valid_loss": 1.0})


@pytest.fixture
def place(tmp_path):
    """A run folder (best.pt, last.pt, config.json), a standalone checkpoint, a tree with a WAV, a Zarr
    store and a user's file: everything a --out must not replace."""
    run = tmp_path / "run"
    _checkpoint(run / "best.pt")
    _checkpoint(run / "last.pt")
    (run / "config.json").write_text('{"seed": 0}\n')
    tree = tmp_path / "tree"
    (tree / "yes").mkdir(parents=True)
    sf.write(tree / "yes" / "a_nohash_0.wav", np.zeros(16_000, np.int16), 16_000, subtype="PCM_16")
    (tree / "testing_list.txt").write_text("yes/a_nohash_0.wav\n")
    (tree / "validation_list.txt").write_text("")
    store = tmp_path / "mel.zarr"
    (store / "features").mkdir(parents=True)
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (store / "features" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    (tmp_path / "notes.txt").write_text("mine")
    return {
        "run": run, "standalone": _checkpoint(tmp_path / "a.pt"), "tree": tree, "store": store,
        "notes": tmp_path / "notes.txt", "root": tmp_path,
    }  # fmt: skip


# (the export's input, --out, what the error says the target is)
EXPORT_TARGETS = {
    "onto the run's best.pt": (lambda p: p["run"], lambda p: p["run"] / "best.pt", "input"),
    "onto the run's last.pt": (lambda p: p["run"], lambda p: p["run"] / "last.pt", "checkpoint"),
    "a.pt onto itself": (lambda p: p["standalone"], lambda p: p["standalone"], "input"),
    "a.pt onto another spelling of itself": (
        lambda p: p["standalone"],
        lambda p: p["root"] / "run" / ".." / "a.pt",
        "input",
    ),
    "onto a hard link of the input": (lambda p: p["standalone"], lambda p: _hardlink(p["standalone"]), "input"),
    "onto a run's config.json": (lambda p: p["standalone"], lambda p: p["run"] / "config.json", "did not write"),
    "onto a WAV of a tree": (lambda p: p["run"], lambda p: p["tree"] / "yes" / "a_nohash_0.wav", "tree"),
    "onto a tree's list": (lambda p: p["run"], lambda p: p["tree"] / "testing_list.txt", "tree"),
    "onto a user's file": (lambda p: p["run"], lambda p: p["notes"], "did not write"),
}


def _hardlink(src: Path) -> Path:
    link = src.with_name("link.pt")
    os.link(src, link)
    return link


@pytest.mark.parametrize("case", sorted(EXPORT_TARGETS))
def test_export_never_writes_over_its_input_a_checkpoint_or_a_file_it_did_not_write(case, place):
    source, target, word = EXPORT_TARGETS[case]
    src, target = source(place), target(place)
    before = _files(place["root"])
    r = runner.invoke(app, ["export", str(src), "--format", "torchscript", "--out", str(target)])
    line = _one_error_line(r)
    assert word in line and "--overwrite" in line, line
    assert _files(place["root"]) == before  # nothing replaced, no temporary file left


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_rewrites_its_own_output_and_replaces_another_file_only_with_overwrite(fmt, place):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    args = ["export", str(place["run"]), "--format", fmt]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    default = place["run"] / ("best.onnx" if fmt == "onnx" else "best.torchscript.pt")
    assert default.is_file()
    r = runner.invoke(app, args)  # its own earlier output: rewritten without a word
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--out", str(place["notes"]), "--overwrite"])  # said so: replaced
    assert r.exit_code == 0, r.output
    from speechcls.infer.export import read_torchscript_metadata
    from speechcls.infer.scorers import read_onnx_metadata

    read = read_onnx_metadata if fmt == "onnx" else read_torchscript_metadata
    assert json.loads(read(place["notes"])["classes"]) == ["a", "b", "c"]  # the export, whole
    assert not [p for p in place["root"].iterdir() if p.name.endswith(".tmp")]


def test_a_store_or_a_folder_is_never_an_out_file_even_with_overwrite(place):
    inside = [place["store"] / "zarr.json", place["store"] / "features" / "zarr.json", place["store"] / "new.png"]
    cases = [
        *(["export", str(place["run"]), "--format", "torchscript", "--out", str(t)] for t in inside),
        ["export", str(place["run"]), "--format", "torchscript", "--out", str(place["run"])],
        ["plot", "melbank", "--out", str(place["store"] / "melbank.png")],
        ["report", str(place["run"]), "--out", str(place["store"] / "zarr.json")],
        ["lr-find", "--out", str(place["store"])],
        ["train", "--out", str(place["store"] / "run")],
        ["bench", "store", "--quick", "--out", str(place["store"])],
        ["bench", "store", "--quick", "--out", str(place["store"] / "results")],
    ]
    before = _files(place["root"])
    for args in cases:
        for extra in ([], ["--overwrite"]):
            line = _one_error_line(runner.invoke(app, [*args, *extra]))
            assert "store" in line or "folder" in line, (args, line)
    assert _files(place["root"]) == before


def test_plot_never_writes_over_a_file_it_did_not_draw(place, tmp_path):
    wav = place["tree"] / "yes" / "a_nohash_0.wav"
    theirs = tmp_path / "theirs.png"
    theirs.write_bytes(b"\x89PNG\r\n\x1a\n someone else's figure")
    before = theirs.read_bytes()
    for args in (["plot", "wave", str(wav)], ["plot", "melbank"], ["plot", "dft", str(wav)]):
        line = _one_error_line(runner.invoke(app, [*args, "--out", str(theirs)]))
        assert "did not write" in line and "--overwrite" in line, line
        assert theirs.read_bytes() == before
    ours = tmp_path / "wave.png"
    for _ in range(2):  # the second time: its own figure, redrawn
        r = runner.invoke(app, ["plot", "wave", str(wav), "--out", str(ours)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plot", "melbank", "--out", str(ours)])  # another figure speechcls drew: its own kind
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plot", "melbank", "--out", str(theirs), "--overwrite"])
    assert r.exit_code == 0 and theirs.read_bytes() != before, r.output


@pytest.fixture(scope="module")
def trained(small_store, tmp_path_factory) -> Path:
    """A real one-epoch run on the shared small store."""
    run = tmp_path_factory.mktemp("hostile-a") / "run"
    args = ["train", "--store", str(small_store()), "--epochs", "1", "--batch-size", "32", "--device", "cpu"]
    r = runner.invoke(app, [*args, "--out", str(run)])
    assert r.exit_code == 0, r.output
    return run


def test_report_and_lr_find_never_write_over_a_run_file(trained, tmp_path):
    before = _files(trained)
    for name in ("metrics.json", "log.csv", "best.pt", "config.json"):
        line = _one_error_line(runner.invoke(app, ["report", str(trained), "--out", str(trained / name)]))
        assert "--overwrite" in line, line
    assert _files(trained) == before
    page = tmp_path / "report.html"
    for _ in range(2):  # its own page, rewritten
        assert runner.invoke(app, ["report", str(trained), "--out", str(page)]).exit_code == 0
    theirs = tmp_path / "index.html"
    theirs.write_text("<html>my page</html>")
    line = _one_error_line(runner.invoke(app, ["report", str(trained), "--out", str(theirs)]))
    assert "did not write" in line and theirs.read_text() == "<html>my page</html>"
    # lr-find writes lr_find.csv and lr_find.png into --out: neither replaces a file it did not write
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "lr_find.csv").write_text("my,own\n1,2\n")
    store = json.loads((trained / "config.json").read_text())["store"]
    sweep = ["lr-find", "--store", store, "--steps", "3", "--batch-size", "32", "--device", "cpu", "--out"]
    line = _one_error_line(runner.invoke(app, [*sweep, str(folder)]))
    assert "lr_find.csv" in line and (folder / "lr_find.csv").read_text() == "my,own\n1,2\n", line
    (folder / "lr_find.csv").unlink()
    for _ in range(2):
        r = runner.invoke(app, [*sweep, str(folder)])
        assert r.exit_code == 0, r.output
    assert (folder / "lr_find.csv").read_text().startswith("lr,loss")


def test_bench_refuses_an_out_that_is_a_file_or_a_tree(place):
    for target in (place["notes"], place["tree"], place["run"] / "best.pt"):
        before = _files(place["root"])
        line = _one_error_line(runner.invoke(app, ["bench", "store", "--quick", "--out", str(target)]))
        assert str(target) in line, line
        assert _files(place["root"]) == before


# --- item 7: a word is text, never an option; a failed synth leaves no temporary folder -----------------
@pytest.mark.parametrize("word", ["-x", "--help", "-w/tmp/evil.wav", "--path=/tmp", "-", "-yes"])
def test_a_synth_word_that_looks_like_an_option_is_refused_and_leaves_nothing(word, tmp_path, monkeypatch, espeak):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "data" / "synth_commands"
    r = runner.invoke(app, ["synth", "--out", str(out), "--voices", "3", f"--words={word},yes"])
    line = _one_error_line(r)
    assert repr(word) in line or word in line, line
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())
    assert not list((tmp_path / "tmp").iterdir())


def test_synth_never_writes_into_a_store(tmp_path):
    store = tmp_path / "mel.zarr"
    store.mkdir()
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, ["synth", "--out", str(store / "tree"), "--voices", "3", "--words", "yes", *extra])
        assert "inside the Zarr store" in _one_error_line(r)
    assert [p.name for p in tmp_path.rglob("*")] == ["mel.zarr", "zarr.json"]


def test_espeak_reads_a_word_as_text_even_when_it_starts_with_a_dash(tmp_path, espeak):
    from speechcls.data.synth import Voice, _speak

    audio, rate = _speak(Voice("en-us", "m1", 140, 50), "--version", tmp_path)  # spoken, not an option
    assert rate > 0 and len(audio) > rate // 10 and np.abs(audio).max() > 0.01


def test_a_failed_synth_removes_its_temporary_tree(tmp_path, monkeypatch, espeak):
    from speechcls.data import synth

    def fail(*args, **kwargs):
        raise RuntimeError("espeak-ng died")

    monkeypatch.setattr(synth, "make_clip", fail)
    out = tmp_path / "synth_commands"
    with pytest.raises(RuntimeError, match="espeak-ng died"):
        synth.synthesize(out, words=("yes", "no"), voices=3)
    assert list(tmp_path.iterdir()) == []


# --- weak: writing a run's files: disk full, read-only, a kill's temp file ------------------------------
def _full_temps(monkeypatch, prefixes=(".best.pt.", ".last.pt.")):
    """Temporary files of the given names become links to /dev/full: writing them fails with ENOSPC,
    as on a full disk (the kernel's own error, through whatever writes)."""
    from speechcls import runtime

    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        fd, path = real(suffix=suffix, prefix=prefix, dir=dir, text=text)
        if prefix and prefix.startswith(prefixes):
            os.close(fd)
            os.unlink(path)
            os.symlink("/dev/full", path)
            fd = os.open(path, os.O_WRONLY)
        return fd, path

    monkeypatch.setattr(runtime.tempfile, "mkstemp", mkstemp)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_while_writing_a_checkpoint_says_disk_full_naming_it(small_store, tmp_path, monkeypatch):
    _full_temps(monkeypatch)
    run = tmp_path / "run"
    args = ["train", "--store", str(small_store()), "--epochs", "1", "--batch-size", "32", "--device", "cpu"]
    line = _one_error_line(runner.invoke(app, [*args, "--out", str(run)]))
    assert "disk is full" in line and str(run / "best.pt") in line, line
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_under_any_atomic_write_names_the_file_not_its_temp(tmp_path, monkeypatch):
    import torch

    from speechcls.cli.app import error_line
    from speechcls.engine import checkpoint
    from speechcls.runtime import atomic_write, write_text_atomic

    _full_temps(monkeypatch, prefixes=(".a.",))
    writes = {
        "checkpoint": lambda: checkpoint.save(tmp_path / "a.pt", {"model": {"w": torch.zeros(10_000)}}),
        "text": lambda: write_text_atomic(tmp_path / "a.json", "x" * 100_000),
        "torch.save to the path": lambda: atomic_write(tmp_path / "a.bin", lambda t: torch.save(torch.zeros(99), t)),
    }
    for what, write in writes.items():
        with pytest.raises(OSError) as e:
            write()
        line = error_line(e.value)
        assert e.value.errno == errno.ENOSPC and "disk is full" in line and "unexpected" not in line, (what, line)
        assert ".tmp" not in line and str(tmp_path / "a.") in line, (what, line)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_folder_that_cannot_be_written_is_named_with_the_reason_not_free_space(code, tmp_path, monkeypatch):
    from speechcls import runtime
    from speechcls.cli.app import error_line

    def refuse(suffix=None, prefix=None, dir=None, text=False):
        raise OSError(code, os.strerror(code), os.path.join(dir, f"{prefix}abcdefgh{suffix}"))

    monkeypatch.setattr(runtime.tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as e:
        runtime.write_text_atomic(tmp_path / "run" / "config.json", "{}")
    line = error_line(e.value)
    assert os.strerror(code) in line and f"{tmp_path / 'run'}:" in line, line
    assert ".tmp" not in line and "space" not in line, line


def test_a_temp_file_left_by_a_kill_is_removed_when_the_run_resumes_or_is_replaced(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    left = [run / ".last.pt.k1ll3d.tmp", run / ".best.pt.x.tmp", run / ".log.csv.y.tmp", run / ".metrics.json.z.tmp"]
    for p in left:
        p.write_bytes(b"half a file")
    (run / ".notes.txt.tmp").write_text("not a run file's temp: kept")
    r = runner.invoke(app, ["train", "--resume", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in left) and (run / ".notes.txt.tmp").exists()
    for p in left:
        p.write_bytes(b"half a file")
    store = json.loads((run / "config.json").read_text())["store"]
    args = ["train", "--store", store, "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--overwrite"]
    r = runner.invoke(app, [*args, "--out", str(run)])
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in left) and (run / ".notes.txt.tmp").exists()


# --- weak: every numeric training option is checked at the boundary, naming it ----------------------
BAD_OPTIONS = [
    (["--max-lr", "inf"], "--max-lr"),
    (["--max-lr", "nan"], "--max-lr"),
    (["--max-lr", "0"], "--max-lr"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--weight-decay", "-1"], "--weight-decay"),
    (["--warmup-epochs", "nan"], "--warmup-epochs"),
    (["--warmup-epochs", "inf"], "--warmup-epochs"),
    (["--label-smoothing", "nan"], "--label-smoothing"),
    (["--ema", "nan"], "--ema"),
    (["--split-seed", "-1"], "--split-seed"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**40)], "--seed"),
    (["--freq-masks", "-1"], "--freq-masks"),
    (["--time-masks", "-2"], "--time-masks"),
    (["--freq-width", "-1"], "--freq-width"),
    (["--freq-masks", "2", "--freq-width", "100000"], "--freq-width"),
    (["--time-masks", "2", "--time-width", "100000"], "--time-width"),
    (["--freq-masks", "1", "--freq-width", "81"], "--freq-width"),
    (["--mixup", "inf"], "--mixup"),
    (["--mixup", "-0.5"], "--mixup"),
    (["--noise-volume", "nan"], "--noise-volume"),
    (["--noise-prob", "1.5"], "--noise-prob"),
    (["--speed", "nan"], "--speed"),
    (["--shift-ms", "inf"], "--shift-ms"),
    (["--n-mels", "-3"], "--n-mels"),
    (["--patience", "0"], "--patience"),
    (["--min-epochs", "-1"], "--min-epochs"),
]


@pytest.mark.parametrize("extra, option", BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_a_bad_numeric_train_option_is_refused_naming_it_before_any_run_file(extra, option, small_store, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--store", str(small_store()), "--epochs", "2", "--device", "cpu", "--out", str(run), *extra]
    line = _one_error_line(runner.invoke(app, args))
    assert option in line, line
    assert not run.exists() or not list(run.iterdir())


def test_a_mask_as_wide_as_the_features_is_accepted(small_store, tmp_path):
    """The store's mel features are 80 bins x 81 frames: a width up to those is a valid (if harsh) mask."""
    from speechcls.config import TrainConfig
    from speechcls.engine.fit import fit

    cfg = TrainConfig(
        store=str(small_store()), device="cpu", batch_size=32, epochs=1, freq_masks=1, freq_width=80, time_masks=1,
        time_width=81,
    ).validate()  # fmt: skip
    assert fit(cfg, tmp_path / "run")["epochs_run"] == 1


@pytest.mark.parametrize(
    "args, option",
    [(["--end-lr", "inf"], "--end-lr"), (["--start-lr", "nan"], "--start-lr"), (["--steps", "1"], "--steps")],
)
def test_lr_find_refuses_non_finite_rates(args, option, small_store, tmp_path):
    r = runner.invoke(app, ["lr-find", "--store", str(small_store()), "--out", str(tmp_path / "lr"), *args])
    assert r.exit_code != 0 and option in r.output and "Traceback" not in r.output, r.output  # a usage error
    assert not (tmp_path / "lr").exists()


# --- weak: a noise recording out of range is refused with a warning naming it ---------------------------
@pytest.mark.parametrize("peak", [1e30, 1e4, -50.0])
def test_a_noise_recording_outside_full_scale_is_skipped_with_a_warning_naming_it(peak, tmp_path):
    from speechcls.data.noise import load_noise

    rng = np.random.default_rng(0)
    good = (0.1 * rng.standard_normal(32_000)).astype(np.float32)
    bad = good.copy()
    bad[1234] = peak
    sf.write(tmp_path / "good.wav", good, 16_000, subtype="FLOAT")
    sf.write(tmp_path / "loud.wav", bad, 16_000, subtype="FLOAT")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        recordings = load_noise(tmp_path)
    texts = [str(w.message) for w in said]
    assert len(recordings) == 1 and np.array_equal(recordings[0], good)
    assert len(texts) == 1 and str(tmp_path / "loud.wav") in texts[0] and "[-1, 1]" in texts[0], texts
    (tmp_path / "good.wav").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no usable background-noise"):
            load_noise(tmp_path)


def test_full_scale_noise_is_kept(tmp_path):
    from speechcls.data.noise import load_noise

    x = np.tile(np.array([1.0, -1.0, 0.5], np.float32), 12_000)
    sf.write(tmp_path / "edge.wav", x, 16_000, subtype="FLOAT")
    sf.write(tmp_path / "pcm.wav", (x * 32767).astype(np.int16), 16_000, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_noise(tmp_path)) == 2
