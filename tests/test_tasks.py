"""Tasks (issue 13): kws12's classes, counts and examples on real clips; silence cut deterministically from
its split's region of the background noise; every example once per epoch in every mode and shard; the
loader's pipeline hook; the words task unchanged."""

import warnings
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from typer.testing import CliRunner

from speechcls import config
from speechcls.config import FeatureParams
from speechcls.data.noise import load_noise, noise_fingerprint, noise_source, silence_clips, split_region
from speechcls.data.tasks import make_task, task_counts, task_split
from speechcls.data.tree import index_tree
from speechcls.dist import Rank
from speechcls.featurize import featurize
from speechcls.loader import FeatureLoader

from helpers import SMALL_MEL, read_store, write_wav

MODES = ["device", "host", "stream"]
TEN = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # Warden 2018's keywords
KWS12 = ["_silence_", "_unknown_", *TEN]  # TF prepare_words_list: silence, unknown, then the wanted words


@pytest.fixture(scope="module")
def stores(mini_root, tmp_path_factory):
    """mel (80 x 81) and waveform stores of the 300 real clips, in chunks of 16 rows."""
    base = tmp_path_factory.mktemp("tasks")
    out = {}
    for variant, extra in (("mel", SMALL_MEL), ("waveform", {})):
        out[variant] = featurize(
            FeatureParams(variant, **extra), mini_root, out=base / f"{variant}.zarr", backend="torch", device="cpu",
            chunk_rows=16, batch_size=32,
        ).store  # fmt: skip
    return out


@pytest.fixture(scope="module")
def noise(synth_tree):
    """The synth tree's white, pink and brown noise (30 s each): the mini tree has no _background_noise_."""
    return synth_tree / config.BACKGROUND_DIR


def kws(store, split="train", **kw):
    return FeatureLoader(store, split, task="kws12", batch_size=8, seed=4, **kw)


def by_hand(root):
    """{split: (keyword clips, other-word clips)} read straight from the folders and the two lists."""
    lists = {name: set((root / f"{name}_list.txt").read_text().split()) for name in ("validation", "testing")}
    out = {s: Counter() for s in config.SPLITS}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for wav in d.glob("*.wav"):
            rel = f"{d.name}/{wav.name}"
            split = "validation" if rel in lists["validation"] else "test" if rel in lists["testing"] else "train"
            out[split]["known" if d.name in TEN else "other"] += 1
    return out


# --- the protocol on the real clips ---------------------------------------------------------------------
def test_kws12_classes_and_counts_on_the_mini_tree(mini_root, stores, noise):
    hand = by_hand(mini_root)
    # 300 clips: 44 listed for validation, 51 for testing, the rest train
    assert {s: hand[s].total() for s in hand} == {"train": 205, "validation": 44, "test": 51}
    assert {s: hand[s]["known"] for s in hand} == {"train": 58, "validation": 19, "test": 23}
    for split in config.SPLITS:
        known, other = hand[split]["known"], hand[split]["other"]
        tenth = -(-known // 10)  # ceil(known x 10 %): Warden's silence and unknown sizes
        expected = {"_silence_": tenth, "_unknown_": min(tenth, other)}
        loader = kws(stores["mel"], split, noise_dir=noise)
        assert loader.classes == KWS12
        got = dict(zip(KWS12, np.bincount(loader.labels, minlength=12).tolist()))
        assert {k: got[k] for k in expected} == expected
        assert sum(got[w] for w in TEN) == known and loader.n == known + 2 * tenth
        # the tree index gives the same counts, without a store
        index = index_tree(mini_root)
        counts = task_counts(make_task("kws12", index.classes), [c.label for c in index.clips], index.paths,
                             index.official)[split]  # fmt: skip
        assert counts == got
    assert [kws(stores["mel"], s, noise_dir=noise).n for s in config.SPLITS] == [70, 23, 29]


def test_labels_follow_the_task(stores, noise):
    s = read_store(stores["mel"])
    classes = s["attrs"]["classes"]
    loader = kws(stores["mel"], noise_dir=noise)
    for row, label in zip(loader.rows, loader.labels[: len(loader.rows)]):
        word = classes[s["label"][row]]
        assert KWS12[label] == (word if word in TEN else "_unknown_")
    assert (loader.labels[len(loader.rows) :] == 0).all() and loader.n_silence == 6


def test_unknown_choice_is_deterministic_within_its_split_and_by_path(mini_root, stores, noise):
    paths = {}
    for split, code in (("train", 0), ("validation", 1), ("test", 2)):
        s = read_store(stores["mel"])
        a, b = kws(stores["mel"], split, noise_dir=noise), kws(stores["mel"], split, noise_dir=noise)
        assert np.array_equal(a.rows, b.rows)
        unknown = a.rows[a.labels[: len(a.rows)] == 1]
        assert (s["split"][unknown] == code).all() and s["valid"][unknown].all()
        assert not {s["attrs"]["classes"][k] for k in s["label"][unknown]} & set(TEN)
        paths[split] = {str(p) for p in s["path"][unknown]}
        # the waveform store (another store of the tree) and the tree index choose the same clips
        w = read_store(stores["waveform"])
        other = kws(stores["waveform"], split, noise_dir=noise)
        assert {str(p) for p in w["path"][other.rows[other.labels[: len(other.rows)] == 1]]} == paths[split]
        index = index_tree(mini_root)
        rows = np.flatnonzero(index.official == code)
        view = task_split(make_task("kws12", index.classes), rows, [index.clips[i].label for i in rows],
                          [index.paths[i] for i in rows], split)  # fmt: skip
        assert {index.paths[i] for i in view.rows[view.labels == 1]} == paths[split]
    assert not (paths["train"] & paths["validation"]) and not (paths["train"] & paths["test"])
    assert not (paths["validation"] & paths["test"])


def test_kws12_refuses_a_store_without_its_words_and_unknown_tasks():
    with pytest.raises(ValueError, match="the word folders here are bed, cat") as e:
        make_task("kws12", ["bed", "cat"])
    assert "--task words" in str(e.value)
    with pytest.raises(ValueError, match="unknown task 'kws35': choose one of words, kws12"):
        make_task("kws35", ["yes"])


def test_kws12_without_noise_names_where_it_looked_and_the_option(stores, mini_root):
    with pytest.raises(ValueError, match="--noise-dir") as e:
        kws(stores["mel"])
    assert f"{mini_root.resolve()}/_background_noise_" in str(e.value) and "6 silence examples" in str(e.value)
    with pytest.raises(ValueError, match="--noise-dir /nonexistent/noise: no such folder"):
        kws(stores["mel"], noise_dir="/nonexistent/noise")


# --- silence ----------------------------------------------------------------------------------------------
def locate(clip, recordings):
    """(recording, offset, volume) of a scaled crop, found by normalized cross-correlation (FFT): an
    independent reading of where a silence example was cut."""
    best = (-1.0, None)
    L = len(clip)
    for k, rec in enumerate(recordings):
        n = len(rec)
        size = 1 << (n + L).bit_length()
        corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(clip, size)), size)[: n - L + 1]
        energy = np.cumsum(np.concatenate([[0.0], rec.astype(np.float64) ** 2]))
        windows = np.sqrt(np.maximum(energy[L:] - energy[: n - L + 1], 1e-12))
        score = np.abs(corr) / windows / np.linalg.norm(clip)
        o = int(score.argmax())
        if score[o] > best[0]:
            best = (score[o], (k, o))
    k, o = best[1]
    crop = recordings[k][o : o + L].astype(np.float64)
    return k, o, float(clip @ crop / (crop @ crop)), best[0]


def test_silence_is_cut_from_its_split_region_deterministically(noise):
    files = sorted(noise.glob("*.wav"))
    recordings = [sf.read(f, dtype="float32")[0] for f in files]  # the reference: soundfile, nothing else
    L = 16_000
    n = len(recordings[0])
    assert n == 480_000 and [f.name for f in files] == ["brown_noise.wav", "pink_noise.wav", "white_noise.wav"]
    region = {"train": (0, 384_000), "validation": (384_000, 432_000), "test": (432_000, 480_000)}  # 0.8, 0.9
    loaded = load_noise(noise)
    for split, (lo, hi) in region.items():
        assert np.array_equal(split_region(recordings[0], split), recordings[0][lo:hi])
        clips = silence_clips(loaded, split, 6, L)
        assert clips.shape == (6, L) and clips.dtype == np.float32
        assert np.array_equal(clips, silence_clips(loaded, split, 6, L))  # a function of (split, i)
        assert np.array_equal(clips[:4], silence_clips(loaded, split, 4, L))  # example i does not depend on n
        for clip in clips:
            k, o, volume, score = locate(clip, recordings)
            assert score > 0.99999 and lo <= o and o + L <= hi  # the split's region, whole
            assert 0 < volume < 1
            np.testing.assert_allclose(clip, recordings[k][o : o + L] * np.float32(volume), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        split_region(recordings[0], "dev")


def test_loader_silence_is_the_store_item_of_the_quantized_clip(stores, noise):
    wave = kws(stores["waveform"], "validation", noise_dir=noise)
    mel = kws(stores["mel"], "validation", noise_dir=noise)
    clips = silence_clips(load_noise(noise), "validation", 2, 16_000)
    pcm = np.clip(np.round(clips.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    assert wave.silence.shape == (2, 1, 16_000) and wave.silence.dtype == np.int16
    assert np.array_equal(wave.silence[:, 0], pcm)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=16_000, n_fft=512, win_length=480, hop_length=200, n_mels=80, power=2.0, normalized=True
    )(torch.from_numpy(pcm.astype(np.float32) / 32768))
    assert mel.silence.shape == (2, 1, 80, 81) and mel.silence.dtype == np.float32
    np.testing.assert_allclose(mel.silence[:, 0], reference.numpy(), rtol=1e-4, atol=1e-7)
    again = kws(stores["mel"], "validation", noise_dir=noise)
    assert np.array_equal(again.silence, mel.silence) and mel.noise["digest"] == again.noise["digest"]
    assert [f[0] for f in mel.noise["files"]] == ["brown_noise.wav", "pink_noise.wav", "white_noise.wav"]


def test_load_noise_resamples_and_skips_what_it_cannot_use(tmp_path):
    rng = np.random.default_rng(0)
    write_wav(tmp_path / "a_8k.wav", (0.1 * rng.standard_normal(24_000)).astype(np.float32), 8_000, "PCM_16")
    write_wav(tmp_path / "b_short.wav", np.zeros(15_999, np.float32), 16_000, "PCM_16")
    (tmp_path / "c_bad.wav").write_bytes(b"not audio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = load_noise(tmp_path)
    said = " ".join(str(w.message) for w in caught)
    assert "b_short.wav skipped: 15999 samples" in said and "c_bad.wav skipped: cannot use it" in said
    assert len(got) == 1 and len(got[0]) == 48_000 and got[0].dtype == np.float32  # 3 s at 8 kHz -> 16 kHz
    for bad in ("b_short.wav", "a_8k.wav"):
        (tmp_path / bad).unlink()
    with pytest.raises(ValueError, match=f"{tmp_path}: no usable background-noise recording"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_noise(tmp_path)


def test_noise_fingerprint_and_source(tmp_path, noise):
    import shutil

    copy = tmp_path / "noise"
    shutil.copytree(noise, copy)
    before = noise_fingerprint(copy)
    assert before["digest"] == noise_fingerprint(noise)["digest"]  # names, sizes and bytes, not the folder
    data = bytearray((copy / "pink_noise.wav").read_bytes())
    data[-1] ^= 1
    (copy / "pink_noise.wav").write_bytes(bytes(data))
    assert noise_fingerprint(copy)["digest"] != before["digest"]
    attrs = {"dataset": {"source_root": str(noise.parent)}}
    assert noise_source(attrs) == noise and noise_source(attrs, copy) == copy
    assert noise_source({"dataset": {"source_root": str(tmp_path)}}) is None


def test_a_store_of_a_tree_with_noise_needs_no_noise_dir(synth_tree, tmp_path):
    out = tmp_path / "w.zarr"
    store = featurize(FeatureParams("waveform"), synth_tree, out=out, backend="torch", device="cpu").store
    loader = FeatureLoader(store, "train", task="kws12", batch_size=4)
    assert loader.noise["folder"] == str((synth_tree / config.BACKGROUND_DIR).resolve())
    # four of the ten words and no other word: nothing to choose as unknown, silence a tenth of the words
    got = dict(zip(KWS12, np.bincount(loader.labels, minlength=12).tolist()))
    known = sum(got[w] for w in ("yes", "no", "up", "down"))
    assert got["_unknown_"] == 0 and got["_silence_"] == -(-known // 10) > 0


# --- serving: every example once, every mode, every shard --------------------------------------------------
def identify(loader):
    """Map each served item's bytes to its example: store row r -> r, silence j -> -1 - j."""
    s = read_store(loader.loc)
    keys = {s["features"][r].astype(np.float32).tobytes(): int(r) for r in range(len(s["path"]))}
    for j, item in enumerate(loader.silence):
        keys[item.astype(np.float32).tobytes()] = -1 - j
    return keys


def served(loader, keys):
    seen, labels, sizes = [], [], []
    for k, (x, y) in enumerate(loader):
        rows = [keys[xi.astype(np.float32).tobytes()] for xi in x.numpy()]
        assert loader.batch_rows(k).tolist() == rows
        seen += rows
        labels += y.tolist()
        sizes.append(len(y))
    return seen, labels, sizes


@pytest.mark.parametrize("mode", MODES)
def test_every_example_once_per_epoch_with_its_label(stores, noise, mode):
    loader = kws(stores["mel"], noise_dir=noise, mode=mode)
    keys = identify(loader)
    expected = sorted(loader.rows.tolist() + [-1 - j for j in range(6)])
    label_of = dict(zip(loader.example_rows.tolist(), loader.labels.tolist()))
    orders = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen, labels, sizes = served(loader, keys)
        assert sorted(seen) == expected and len(seen) == 70
        assert labels == [label_of[r] for r in seen]
        assert min(sizes) >= 2 and len(sizes) == len(loader) and sum(sizes) == sum(loader.global_sizes)
        orders.append(seen)
    assert orders[0] != orders[1]
    again = kws(stores["mel"], noise_dir=noise, mode=mode)
    again.set_epoch(1)
    assert served(again, keys)[0] == orders[1]  # the order is a function of (seed, epoch)


def test_unshuffled_task_splits_come_in_one_order_in_every_mode(stores, noise):
    orders = []
    for mode in MODES:
        loader = kws(stores["mel"], "test", noise_dir=noise, mode=mode)
        orders.append(served(loader, identify(loader))[0])
    assert orders[0] == orders[1] == orders[2] and len(orders[0]) == 29
    rows = [r for r in orders[0] if r >= 0]
    assert rows == sorted(rows)  # store rows in store order, silence among them chunk by chunk


@pytest.mark.parametrize("mode,own", [(m, True) for m in MODES] + [("stream", False)])
def test_rank_shards_cover_every_example_once(stores, noise, mode, own):
    loaders = [kws(stores["mel"], noise_dir=noise, mode=mode, rank=Rank(r, 2), own_chunks=own) for r in range(2)]
    keys = identify(loaders[0])
    expected = sorted(loaders[0].example_rows.tolist())
    for epoch in (0, 3):
        seen, steps = [], []
        for loader in loaders:
            loader.set_epoch(epoch)
            rows, _labels, sizes = served(loader, keys)
            seen.append(rows)
            steps.append(sizes)
        assert sorted(seen[0] + seen[1]) == expected and len(expected) == 70  # no example twice, none missed
        assert len(steps[0]) == len(steps[1]) and [a + b for a, b in zip(*steps)] == loaders[0].global_sizes
        assert min(min(s) for s in steps) >= 2
        if mode == "stream" and own:
            assert loaders[0].stream.plan(epoch).own  # each rank on its own chunks, silence joined to them


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_task_batches_equal_cpu_batches(stores, noise, mode):
    """Silence features made on the GPU (cuFFT) and served from it: the CPU's numbers to float32 rounding."""
    a = kws(stores["mel"], noise_dir=noise, mode=mode, device="cuda")
    b = kws(stores["mel"], noise_dir=noise, mode=mode, device="cpu")
    np.testing.assert_allclose(a.silence, b.silence, rtol=1e-4, atol=1e-6)
    for k, ((xa, ya), (xb, yb)) in enumerate(zip(a, b, strict=True)):
        assert xa.device.type == "cuda" and torch.equal(ya.cpu(), yb)
        assert np.array_equal(a.batch_rows(k), b.batch_rows(k))
        torch.testing.assert_close(xa.cpu(), xb, rtol=1e-4, atol=1e-6)


# --- the pipeline hook --------------------------------------------------------------------------------------
class Recorder:
    """A pipeline that records what it was given and returns its input."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, epoch, position):
        self.calls.append((tuple(x.shape), x.dtype, epoch, position, torch.is_grad_enabled(), x.clone()))
        return x


@pytest.mark.parametrize("mode", MODES)
def test_pipeline_gets_float_batches_and_their_positions(stores, noise, mode):
    for variant, item in (("waveform", (16_000,)), ("mel", (1, 80, 81))):
        runs = []
        for _ in range(2):
            calls = []
            for r in range(2):
                rec = Recorder()
                loader = kws(stores[variant], noise_dir=noise, mode=mode, rank=Rank(r, 2), pipeline=rec)
                loader.set_epoch(2)
                out = [x for x, _y in loader]
                assert all(o is c[-1] or torch.equal(o, c[-1]) for o, c in zip(out, rec.calls, strict=True))
                calls += rec.calls
            runs.append([c[:5] for c in calls])
        assert runs[0] == runs[1]  # positions are deterministic for a seed
        assert all(shape[1:] == item and dtype == torch.float32 and epoch == 2 and not grad
                   for shape, dtype, epoch, _p, grad in runs[0])  # fmt: skip
        spans = sorted((p, p + shape[0]) for shape, _d, _e, p, _g in runs[0])
        assert spans[0][0] == 0 and spans[-1][1] == 70  # the batches of both ranks tile the epoch's order
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # a waveform batch is the stored int16 / 32768
    rec = Recorder()
    loader = kws(stores["waveform"], "test", noise_dir=noise, mode=mode, pipeline=rec)
    x = next(iter(loader))[0]
    rows = loader.batch_rows(0)
    s = read_store(stores["waveform"])
    want = np.stack([s["features"][r, 0] if r >= 0 else loader.silence[-1 - r, 0] for r in rows]) / 32768.0
    np.testing.assert_array_equal(x.numpy(), want.astype(np.float32))


# --- the words task ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_words_task_is_every_word_folder_unchanged(stores, mode):
    s = read_store(stores["mel"])
    a = FeatureLoader(stores["mel"], "train", batch_size=16, seed=1, mode=mode)
    b = FeatureLoader(stores["mel"], "train", batch_size=16, seed=1, mode=mode, task="words", noise_dir="/nowhere")
    assert a.classes == b.classes == s["attrs"]["classes"] and len(a.classes) == 30
    assert a.n == 205 and a.n_silence == 0 and a.silence is None and a.noise is None
    assert np.array_equal(a.labels, s["label"][np.flatnonzero(s["valid"] & (s["split"] == 0))])
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_data_info_prints_the_task_counts(mini_root):
    from speechcls.cli import app

    result = CliRunner().invoke(app, ["data", "info", "--root", str(mini_root), "--task", "kws12", "--no-check-audio"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("task kws12"))
    cells = {}
    for line in lines[start:]:
        parts = [p.strip() for p in line.strip("│┃").split("│")]
        if len(parts) == 8 and parts[1]:
            cells[parts[1]] = parts[2:5]  # official train, validation, test
    assert cells["_silence_"] == ["6", "2", "3"] and cells["_unknown_"] == ["6", "2", "3"]
    assert cells["all"] == ["70", "23", "29"]
    assert "training this task needs --noise-dir" in result.output
    bad = CliRunner().invoke(app, ["data", "info", "--root", str(mini_root), "--task", "kws35"])
    assert bad.exit_code == 1 and "unknown task 'kws35'" in bad.output
