"""featurize on real speech: parity with torchaudio, the store's layout, resume, bad input, errors."""

import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
import zarr

from speechcls import config
from speechcls.config import FeatureParams
from speechcls.data.tree import index_tree
from speechcls.featurize import featurize
from speechcls.store import FORMAT_VERSION, DamagedStore, IncompleteStore, location, proof, reader, writer

from helpers import copy_tree, fsdd_tree, read_store, reference, write_wav

DIE_AFTER = Path(__file__).with_name("die_after.py")
VARIANTS = ["spectrogram", "mel", "complex", "waveform"]


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.fixture(scope="module")
def mini_stores(mini_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("stores")
    return {
        v: featurize(
            FeatureParams(v),
            mini_root,
            out=base / f"{v}.zarr",
            backend="torch",
            device="cpu",
            batch_size=64,
            chunk_rows=32,
        )
        for v in VARIANTS
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_item_equals_torchaudio(mini_root, mini_stores, variant):
    result = mini_stores[variant]
    assert result.status == "written" and result.clips == 300 and not result.skipped
    s = read_store(result.store)
    params = FeatureParams(variant)
    assert s["features"].shape == (300, *params.shape)
    assert (
        s["features"].shape[1:]
        == {"spectrogram": (1, 257, 101), "mel": (1, 128, 101), "complex": (2, 257, 101), "waveform": (1, 16000)}[
            variant
        ]
    )
    worst = 0.0
    for i, rel in enumerate(s["path"]):
        ref = reference(mini_root, rel, params)
        if variant == "waveform":
            assert s["features"].dtype == np.int16
            assert np.array_equal(s["features"][i], ref)
        else:
            worst = max(worst, rel_err(s["features"][i], ref))
    assert worst <= 1e-5


def test_rows_labels_splits_follow_the_index(mini_root, mini_stores):
    s = read_store(mini_stores["mel"].store)
    index = index_tree(mini_root)
    by_path = {c.path: c for c in index.clips}
    official = dict(zip(index.paths, index.split("official")))
    assert sorted(s["path"]) == index.paths  # N = every indexed clip
    assert list(s["path"]) != index.paths  # written in a shuffled order ...
    assert s["attrs"]["row_order_seed"] == config.ROW_ORDER_SEED
    for rel, label, split, speaker in zip(s["path"], s["label"], s["split"], s["speaker"]):
        assert s["attrs"]["classes"][label] == rel.split("/")[0] == index.classes[by_path[rel].label]
        assert split == official[rel] and speaker == by_path[rel].speaker
    chunk = s["attrs"]["chunk_rows"]
    assert len(set(s["label"][:chunk])) > chunk // 3  # ... so a chunk mixes classes
    assert s["valid"].all()


def test_store_attrs(mini_stores):
    attrs = read_store(mini_stores["mel"].store)["attrs"]
    assert attrs["complete"] and attrs["format_version"] == FORMAT_VERSION
    assert attrs["variant"] == "mel" and attrs["params"]["n_mels"] == 128 and attrs["params"]["n_fft"] == 512
    assert attrs["sample_rate"] == 16000 and attrs["clip_samples"] == 16000
    assert attrs["classes"] == list(config.V001_WORDS)
    assert attrs["dataset"]["name"] == "speech_commands_v0.01_mini"
    assert {"torch", "torchaudio", "zarr"} <= set(attrs["packages"])
    assert attrs["skipped"] == {} and attrs["resampled"] == 0
    assert any("mel filters are all zero" in n for n in attrs["notes"])


def test_float16_error_is_float16_rounding(mini_root, tmp_path):
    params = FeatureParams("spectrogram", dtype="float16")
    result = featurize(params, mini_root, out=tmp_path / "s16.zarr", backend="torch", device="cpu")
    s = read_store(result.store)
    assert s["features"].dtype == np.float16
    for i, rel in enumerate(s["path"][:60]):
        ref = reference(mini_root, rel, replace(params, dtype="float32"))
        got = s["features"][i].astype(np.float64)
        # round-to-nearest: half a float16 ulp relative, or half the subnormal spacing near zero
        bound = np.maximum(np.abs(ref) * 2.0**-11, 2.0**-25) * (1 + 1e-3)
        assert (np.abs(got - ref) <= bound + np.abs(ref) * 1e-5).all()


def test_fsdd_8khz_is_resampled_with_torchaudio(fsdd_root, tmp_path):
    root = fsdd_tree(fsdd_root, tmp_path / "fsdd", per_digit=3)
    result = featurize(FeatureParams("waveform"), root, out=tmp_path / "w.zarr", backend="torch", device="cpu")
    assert result.resampled == result.clips == 10 * 6 * 3
    s = read_store(result.store)
    for i, rel in enumerate(s["path"][:40]):
        audio, rate = sf.read(root / rel, dtype="float32")
        assert rate == 8000
        up = AF.resample(torch.from_numpy(audio), 8000, 16000).numpy()
        expected = np.zeros(16000, np.float32)
        expected[: min(16000, up.size)] = up[:16000]
        assert np.abs(s["features"][i, 0] / 32768.0 - expected).max() <= 1 / 32768 + 1e-6
    attrs = s["attrs"]
    assert attrs["resampled"] == 180 and attrs["dataset"]["official_split"]
    assert set(s["split"]) == {0, 2}


def test_clips_over_and_under_one_second(tmp_path):
    t = np.arange(24000) / 16000
    long = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_wav(tmp_path / "t" / "yes" / "a_nohash_0.wav", long, 16000, "FLOAT")
    write_wav(tmp_path / "t" / "yes" / "b_nohash_0.wav", long[:5000], 16000, "FLOAT")
    s = read_store(featurize(FeatureParams("waveform"), tmp_path / "t", out=tmp_path / "w.zarr", device="cpu").store)
    rows = dict(zip(s["path"], s["features"][:, 0].astype(np.float32) / 32768.0))
    np.testing.assert_allclose(rows["yes/a_nohash_0.wav"], long[:16000], atol=1 / 32768)
    np.testing.assert_allclose(rows["yes/b_nohash_0.wav"][:5000], long[:5000], atol=1 / 32768)
    assert not rows["yes/b_nohash_0.wav"][5000:].any()


# --- bad input ------------------------------------------------------------------------------------


def _formats_tree(root: Path, good_clip: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Good files in many formats (expected 16 kHz mono float signal) and bad files (expected reason)."""
    rng = np.random.default_rng(0)
    base, _ = sf.read(good_clip, dtype="float32")
    base = np.pad(base, (0, max(0, 16000 - base.size)))[:16000] * 0.9
    expected = {}

    def resampled(rate):
        return AF.resample(torch.from_numpy(base), 16000, rate).numpy()

    cases = {
        "pcm16/s01_nohash_0.wav": (base, 16000, "PCM_16"),
        "stereo/s02_nohash_0.wav": (np.stack([base, 0.5 * base], 1), 16000, "PCM_16"),
        "rate44/s03_nohash_0.wav": (resampled(44100), 44100, "PCM_16"),
        "rate48/s04_nohash_0.wav": (resampled(48000), 48000, "FLOAT"),
        "rate8/s05_nohash_0.wav": (resampled(8000), 8000, "PCM_16"),
        "pcm8/s06_nohash_0.wav": (base, 16000, "PCM_U8"),
        "pcm24/s07_nohash_0.wav": (base, 16000, "PCM_24"),
        "pcm32/s08_nohash_0.wav": (base, 16000, "PCM_32"),
        "float/s09_nohash_0.wav": (base, 16000, "FLOAT"),
        "double/s10_nohash_0.wav": (base, 16000, "DOUBLE"),
    }
    for rel, (data, rate, subtype) in cases.items():
        write_wav(root / rel, data, rate, subtype)
        mono = data.mean(axis=1) if data.ndim == 2 else data
        # what a correct decoder must give: the file's samples as written, downmixed, resampled by torchaudio
        written, _ = sf.read(root / rel, dtype="float32", always_2d=True)
        mono = written.mean(axis=1)
        if rate != 16000:
            mono = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), rate, 16000).numpy()
        expected[rel] = np.pad(mono, (0, max(0, 16000 - mono.size)))[:16000]
    assert np.abs(expected["pcm8/s06_nohash_0.wav"] - base).max() < 2 / 128  # 8-bit really is 8-bit
    good_bytes = (root / "pcm16/s01_nohash_0.wav").read_bytes()
    bad = {
        "bad/b01_nohash_0.wav": b"",  # empty
        "bad/b02_nohash_0.wav": b"this is a text file, not audio\n" * 20,  # non-audio
        "bad/b03_nohash_0.wav": good_bytes[: len(good_bytes) // 2],  # truncated in the data
        "bad/b04_nohash_0.wav": good_bytes[:30],  # truncated in the header
        "bad/b05_nohash_0.wav": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),  # corrupt
    }
    for rel, data in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    write_wav(root / "bad" / "b06_nohash_0.wav", np.zeros((0,), np.float32), 16000, "PCM_16")  # no samples
    return expected, {**{k: "" for k in bad}, "bad/b06_nohash_0.wav": ""}


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_bad_files_are_skipped_and_formats_decode(mini_root, tmp_path, backend):
    if backend == "dali":
        pytest.importorskip("nvidia.dali")
    tree = tmp_path / "tree"
    expected, bad = _formats_tree(tree, mini_root / "yes" / sorted(p.name for p in (mini_root / "yes").iterdir())[0])
    result = featurize(
        FeatureParams("waveform"),
        tree,
        out=tmp_path / "w.zarr",
        backend=backend,
        device="cpu",
        batch_size=4,
        chunk_rows=4,
    )
    assert set(result.skipped) == set(bad)
    assert all(reason for reason in result.skipped.values())
    assert result.resampled == 3
    s = read_store(result.store)
    assert s["attrs"]["skipped"] == result.skipped and s["attrs"]["complete"]
    classes = s["attrs"]["classes"]
    for i, rel in enumerate(s["path"]):
        assert classes[s["label"][i]] == rel.split("/")[0]  # no label shifted by a skipped file
        if rel in bad:
            assert not s["valid"][i] and not s["features"][i].any()
        else:
            assert s["valid"][i]
            got = s["features"][i, 0].astype(np.float32) / 32768
            tol = 2 / 128 if "pcm8" in rel else 1.5 / 32768
            np.testing.assert_allclose(got, expected[rel], atol=tol, err_msg=rel)


def test_skipped_files_are_reported_on_the_console(tmp_path, mini_root):
    from typer.testing import CliRunner

    from speechcls.cli import app

    tree = copy_tree(mini_root, tmp_path / "t", per_word=2, words=("yes", "no"))
    (tree / "no" / "deadbeef_nohash_0.wav").write_bytes(b"garbage")
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(
        app, ["featurize", "--variant", "mel", "--root", str(tree), "--out", str(out), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    assert "skipped no/deadbeef_nohash_0.wav" in r.output
    assert "5 clips, 1 skipped" in r.output and "clips/s" in r.output and "compression" in r.output
    info = CliRunner().invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "skipped files: 1" in info.output and "decoded clips: 4 of 5" in info.output


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="cepstrum"), "unknown variant"),
        (dict(win_length=600), "win_length <= n_fft"),
        (dict(variant="mel", n_mels=300), "n_mels <= n_fft // 2 + 1"),
        (dict(hop_length=0), "hop_length must be positive"),
        (dict(dtype="int8"), "unknown dtype"),
        (dict(f_min=9000.0), "f_min < f_max"),
    ],
)
def test_impossible_parameters_are_refused_before_any_work(tmp_path, mini_root, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        featurize(FeatureParams(**kwargs), mini_root, out=tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


def test_cli_refuses_bad_parameters(tmp_path, mini_root):
    from typer.testing import CliRunner

    from speechcls.cli import app

    r = CliRunner().invoke(
        app, ["featurize", "--root", str(mini_root), "--win-length", "1024", "--out", str(tmp_path / "x.zarr")]
    )
    assert r.exit_code == 1 and "win_length" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.zarr").exists()


def test_unwritable_output_fails_clearly(tmp_path, mini_root):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write the store"):
        featurize(FeatureParams("mel"), mini_root, out=blocker / "s.zarr", device="cpu")


def test_full_disk_fails_clearly_and_store_is_not_complete(tmp_path, mini_root):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with pytest.raises(ValueError, match="No space left") as e:
            featurize(
                FeatureParams("complex"),
                mini_root,
                out=mnt / "s.zarr",
                device="cpu",
                backend="torch",
                chunk_rows=16,
                batch_size=16,
            )
        assert "resumes" in str(e.value)
        with pytest.raises(IncompleteStore, match="run.*again"):
            reader.open_store(mnt / "s.zarr")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- reuse, mismatch, resume ----------------------------------------------------------------------


def test_complete_store_is_reused_and_other_settings_refused(tmp_path, mini_root):
    out = tmp_path / "s.zarr"
    tree = copy_tree(mini_root, tmp_path / "t", per_word=2)
    assert featurize(FeatureParams("mel"), tree, out=out, device="cpu").status == "written"
    assert featurize(FeatureParams("mel"), tree, out=out, device="cpu").status == "present"
    with pytest.raises(ValueError, match="other settings.*params.*--overwrite"):
        featurize(FeatureParams("mel", n_mels=64), tree, out=out, device="cpu")
    (tree / "yes" / sorted(os.listdir(tree / "yes"))[0]).unlink()  # the tree changed
    with pytest.raises(ValueError, match="rows"):
        featurize(FeatureParams("mel"), tree, out=out, device="cpu")
    assert featurize(FeatureParams("mel", n_mels=64), tree, out=out, device="cpu", overwrite=True).status == "written"
    assert read_store(out)["features"].shape == (59, 1, 64, 101)


def test_default_codec_per_variant_and_a_store_keeps_its_own(tmp_path, mini_root):
    """Without --codec: float32 spectra are stored raw (format.default_codec), waveform and float16 with
    blosc; a store already at --out keeps its codec (a complex store made with blosc before the default
    changed is present, not "made with other settings"); --overwrite takes the default."""
    from speechcls.store import DEFAULT_CODEC

    tree = copy_tree(mini_root, tmp_path / "t", per_word=1)
    for params, codec in (
        (FeatureParams("complex"), "none"), (FeatureParams("mel"), "none"), (FeatureParams("spectrogram"), "none"),
        (FeatureParams("mel", dtype="float16"), DEFAULT_CODEC), (FeatureParams("waveform"), DEFAULT_CODEC),
    ):  # fmt: skip
        r = featurize(params, tree, out=tmp_path / f"{params.variant}-{params.dtype}.zarr", device="cpu")
        assert read_store(r.store)["attrs"]["codec"] == codec, params
    out = tmp_path / "old.zarr"
    featurize(FeatureParams("complex"), tree, out=out, device="cpu", codec=DEFAULT_CODEC)
    assert featurize(FeatureParams("complex"), tree, out=out, device="cpu").status == "present"
    with pytest.raises(ValueError, match="other settings.*codec"):
        featurize(FeatureParams("complex"), tree, out=out, device="cpu", codec="zstd-1")
    assert featurize(FeatureParams("complex"), tree, out=out, device="cpu", overwrite=True).status == "written"
    stored = read_store(out)
    assert stored["attrs"]["codec"] == "none"
    np.testing.assert_array_equal(stored["features"], read_store(tmp_path / "complex-float32.zarr")["features"])


# --- what --overwrite may replace ------------------------------------------------------------------


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_replaces_a_folder_that_is_not_a_store(tmp_path, mini_root):
    from typer.testing import CliRunner

    from speechcls.cli import app

    tree = copy_tree(mini_root, tmp_path / "t", per_word=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    other_group = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")  # a Zarr group speechcls did not make
    other_group.attrs["made_by"] = "someone else"
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(3,), dtype="int8")
    for out in (mine, tmp_path / "other.zarr", tmp_path / "array.zarr"):
        before = _listing(out)
        for overwrite in (False, True):
            with pytest.raises(ValueError, match="not a speechcls feature store") as e:
                featurize(FeatureParams("mel"), tree, out=out, device="cpu", overwrite=overwrite)
            message = str(e.value)
            assert str(out) in message and "\n" not in message
            assert "--overwrite only replaces stores speechcls made; choose another --out" in message
        assert _listing(out) == before
    r = CliRunner().invoke(
        app, ["featurize", "--root", str(tree), "--out", str(mine), "--overwrite", "--device", "cpu"]
    )
    assert r.exit_code == 1 and "not a speechcls feature store" in r.output and "Traceback" not in r.output, r.output
    assert _listing(mine) == {"notes.txt": b"keep me"}


def test_the_tree_being_read_is_never_replaced_nor_written_into(tmp_path, mini_root):
    from typer.testing import CliRunner

    from speechcls.cli import app

    tree = copy_tree(mini_root, tmp_path / "t", per_word=1)
    (tmp_path / "link").symlink_to(tree)
    before = _listing(tree)
    # what was seen before: `--root T --out T --overwrite` deleted T and wrote "300 clips, 300 skipped"
    r = CliRunner().invoke(
        app, ["featurize", "--root", str(tree), "--out", str(tree), "--overwrite", "--device", "cpu"]
    )
    assert r.exit_code == 1 and "is the tree being read" in r.output and "Traceback" not in r.output, r.output
    cases = [
        (tree, "is the tree being read"),
        (tmp_path / "link", "is the tree being read"),  # the same folder through a symlink
        (tmp_path, "holds the tree"),
        (tree / "yes", "lies inside the tree"),
        (tree / "s.zarr", "lies inside the tree"),  # new: it would add a folder the index reads as a word
    ]
    for out, message in cases:
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=message):
                featurize(FeatureParams("mel"), tree, out=out, device="cpu", overwrite=overwrite)
    assert _listing(tree) == before and not (tree / "s.zarr").exists()


def test_overwrite_replaces_a_store_speechcls_made(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "t", per_word=1)
    out = tmp_path / "s.zarr"
    assert featurize(FeatureParams("mel"), tree, out=out, device="cpu").status == "written"
    (out / "notes.txt").write_text("a user's file inside the store: never deleted with it")
    (out / "features" / "x.npy").write_bytes(b"another program's")
    before = _listing(out)
    with pytest.raises(ValueError, match=r"holds features/x.npy, notes.txt, which featurize did not write") as e:
        featurize(FeatureParams("mel"), tree, out=out, device="cpu", overwrite=True)
    assert "\n" not in str(e.value) and _listing(out) == before
    (out / "notes.txt").unlink()
    (out / "features" / "x.npy").unlink()
    again = featurize(FeatureParams("mel"), tree, out=out, device="cpu", overwrite=True)
    assert again.status == "written" and again.computed == again.clips
    assert reader.open_store(out).attrs["complete"]


def test_default_store_path_is_in_the_cache(tmp_path, mini_root, monkeypatch):
    monkeypatch.setenv("SPEECHCLS_CACHE", str(tmp_path / "cache"))
    tree = copy_tree(mini_root, tmp_path / "speech_commands_v0.01", per_word=1)
    params = FeatureParams("mel")
    result = featurize(params, tree, device="cpu")
    assert result.store == tmp_path / "cache" / "speech_commands_v0.01" / f"mel-{params.key()}.zarr"
    assert FeatureParams("mel", dtype="float16").key() != params.key() != FeatureParams("spectrogram").key()


def test_no_root_offline_fails_fast_naming_root_and_synth(tmp_path, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rel = config.RELEASES["v0.01"]
    monkeypatch.setitem(config.RELEASES, "v0.01", replace(rel, url=f"http://127.0.0.1:{port}/sc.tar.gz"))
    monkeypatch.setenv("SPEECHCLS_DATA", str(tmp_path / "data"))
    with pytest.raises(Exception) as e:
        featurize(FeatureParams("mel"), device="cpu")
    assert "--root" in str(e.value) and "speechcls synth" in str(e.value)


def _same_store(a: Path, b: Path) -> None:
    sa, sb = read_store(a), read_store(b)
    for name in ("features", "valid", "label", "split", "speaker", "path"):
        assert np.array_equal(sa[name], sb[name]), name
    for chunk in sorted((a / "features" / "c").rglob("*")):
        if chunk.is_file():
            assert chunk.read_bytes() == (b / chunk.relative_to(a)).read_bytes(), chunk


def test_crash_between_blocks_resumes_to_identical_store(tmp_path, mini_root, monkeypatch):
    params = FeatureParams("spectrogram")
    whole = featurize(
        params, mini_root, out=tmp_path / "whole.zarr", backend="torch", device="cpu", chunk_rows=16, batch_size=32
    )
    calls = {"n": 0}
    original = writer.StoreWriter.write_block

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            # the block's chunks are written, its done flag is not: the worst moment to die
            self.features[self.layout.block(args[0])] = args[1]
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(writer.StoreWriter, "write_block", crashing)
    with pytest.raises(KeyboardInterrupt):
        featurize(
            params, mini_root, out=tmp_path / "part.zarr", backend="torch", device="cpu", chunk_rows=16, batch_size=32
        )
    monkeypatch.setattr(writer.StoreWriter, "write_block", original)
    with pytest.raises(IncompleteStore, match="3 of 10 blocks"):
        reader.open_store(tmp_path / "part.zarr")
    resumed = featurize(
        params, mini_root, out=tmp_path / "part.zarr", backend="torch", device="cpu", chunk_rows=16, batch_size=32
    )
    assert resumed.status == "resumed" and resumed.computed == 300 - 3 * 32
    _same_store(whole.store, resumed.store)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_identical_store(tmp_path, mini_root):
    """A real SIGKILL in the middle of a run, then the same command again."""
    env = {**os.environ, "SPEECHCLS_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "speechcls", "featurize", "--variant", "complex", "--root", str(mini_root),
           "--device", "cpu", "--backend", "torch", "--batch-size", "16", "--chunk-rows", "16", "--out"]  # fmt: skip
    subprocess.run([*cmd, str(tmp_path / "whole.zarr")], env=env, check=True, capture_output=True)
    out = tmp_path / "killed.zarr"
    # a real SIGKILL, sent by the run itself right after its 3rd block is recorded (tests/die_after.py)
    r = subprocess.run(
        [sys.executable, str(DIE_AFTER), "3", *cmd[3:], str(out)], env=env, capture_output=True, text=True
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    attrs = reader.read_attrs(out)
    done = zarr.open_array(str(out / "done"), mode="r")[:]
    assert not attrs["complete"] and done.sum() == 3 and len(done) == 19
    subprocess.run([*cmd, str(out)], env=env, check=True, capture_output=True)
    _same_store(tmp_path / "whole.zarr", out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", VARIANTS)
def test_cuda_path_equals_cpu_path(mini_root, mini_stores, tmp_path, variant):
    gpu = read_store(
        featurize(
            FeatureParams(variant),
            mini_root,
            out=tmp_path / "g.zarr",
            backend="torch",
            device="cuda",
            batch_size=64,
            chunk_rows=32,
        ).store
    )
    cpu = read_store(mini_stores[variant].store)
    assert np.array_equal(gpu["path"], cpu["path"])
    for i in range(len(cpu["path"])):
        if variant == "waveform":
            assert np.array_equal(gpu["features"][i], cpu["features"][i])
        else:
            assert rel_err(gpu["features"][i], cpu["features"][i].astype(np.float64)) <= 1e-5


def test_every_chunk_is_an_object_and_lost_ones_are_recomputed(mini_root, mini_stores, tmp_path):
    """zarr reads a missing chunk as fill values: every chunk is written (all-"" skip reasons included),
    so a lost one is found on open, and the same featurize command recomputes only its block."""
    import shutil

    original = mini_stores["mel"].store  # 300 rows, chunks of 32, blocks of 64 rows (5 blocks)
    assert proof.lost_chunks(original, location.open_group(original, mode="r")) == {}
    copy = tmp_path / "copy.zarr"
    shutil.copytree(original, copy)
    for key in ("features/c/3/0/0/0", "skip_reason/c/5", "label/c/0", "resampled/c/4"):
        (copy / key).unlink()  # a partial copy: blocks 1 (rows 96-127), 2 (rows 160-191) and 4 (rows 256-299)
    with pytest.raises(
        DamagedStore, match=r"features: 1 of 10, label: 1 of 1, resampled: 1 of 5, skip_reason: 1 of 10"
    ):
        reader.open_store(copy)
    assert reader.read_attrs(copy)["complete"]  # opening never changes the store
    from typer.testing import CliRunner

    from speechcls.cli import app

    shown = " ".join(CliRunner().invoke(app, ["info", str(copy)]).output.split())
    assert (
        "DAMAGED: lost chunk objects (features 1 of 10, label 1 of 1, resampled 1 of 5, skip_reason 1 of 10)" in shown
    )
    r = featurize(
        FeatureParams("mel"), mini_root, out=copy, backend="torch", device="cpu", batch_size=64, chunk_rows=32
    )
    assert r.status == "repaired" and r.computed == 64 + 64 + 44 and "repaired" in r.line()
    _same_store(original, copy)
    reader.open_store(copy)
    assert (
        featurize(
            FeatureParams("mel"), mini_root, out=copy, backend="torch", device="cpu", batch_size=64, chunk_rows=32
        ).status
        == "present"
    )
    # an unfinished store (block 4 never written) that also lost a finished block's chunk: resuming redoes both
    group = location.open_group(copy, mode="r+")
    group["done"][4] = False
    group.attrs["complete"] = False
    (copy / "features/c/3/0/0/0").unlink()
    r = featurize(
        FeatureParams("mel"), mini_root, out=copy, backend="torch", device="cpu", batch_size=64, chunk_rows=32
    )
    assert r.status == "resumed" and r.computed == 64 + 44
    _same_store(original, copy)


def test_a_store_of_an_older_format_is_rebuilt_by_featurize(mini_root, mini_stores, tmp_path):
    import shutil

    original = mini_stores["mel"].store
    old = tmp_path / "old.zarr"
    shutil.copytree(original, old)
    group = location.open_group(old, mode="r+")
    group.attrs.update({"format_version": 2, "request": {**group.attrs["request"], "format_version": 2}})
    with pytest.raises(
        ValueError,
        match=f"store format version 2, this speechcls reads version {FORMAT_VERSION}; run its featurize command again",
    ):
        reader.open_store(old)
    r = featurize(FeatureParams("mel"), mini_root, out=old, backend="torch", device="cpu", batch_size=64, chunk_rows=32)
    assert r.status == "rebuilt" and r.computed == 300 and "rebuilt (the store there had an older format" in r.line()
    _same_store(original, old)
    assert reader.read_attrs(old)["format_version"] == FORMAT_VERSION


def test_a_clip_with_non_finite_features_is_skipped_not_stored(words10_tree, small_store, tmp_path):
    """A float WAV holding one finite but huge sample (1e30) overflows the power spectrum to inf: its row is
    skipped with the reason (one such row made every training step NaN), every other row is the same as in
    the store of the tree with the clip as it was (same paths, so the same rows)."""
    from typer.testing import CliRunner

    from speechcls.cli import app

    from helpers import SMALL_MEL

    tree = copy_tree(words10_tree, tmp_path / "tree")
    rel = "cat/" + sorted(p.name for p in (tree / "cat").iterdir())[0]
    audio, rate = sf.read(tree / rel, dtype="float32")
    audio[100] = 1e30
    (tree / rel).unlink()
    write_wav(tree / rel, audio, rate, "FLOAT")
    out = tmp_path / "s.zarr"
    args = ["--n-mels", str(SMALL_MEL["n_mels"]), "--hop-length", str(SMALL_MEL["hop_length"])]
    r = CliRunner().invoke(
        app, ["featurize", "--variant", "mel", *args, "--root", str(tree), "--out", str(out), "--device", "cpu",
              "--backend", "torch"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    reason = "features are not finite (peak sample 1e+30: a float file out of [-1, 1]?)"
    assert f"skipped {rel}: {reason}" in " ".join(r.output.split())
    got, ref = read_store(out), read_store(small_store())
    assert np.array_equal(got["path"], ref["path"]) and ref["valid"].all()
    bad = got["path"] == rel
    assert got["attrs"]["skipped"] == {rel: reason}
    assert np.array_equal(got["valid"], ~bad) and not got["features"][bad].any()
    assert np.array_equal(got["features"][~bad], ref["features"][~bad])
    info = CliRunner().invoke(app, ["info", str(out)])
    shown = " ".join(info.output.split())
    assert info.exit_code == 0 and "skipped files: 1" in shown and f"{rel}: {reason}" in shown, info.output
