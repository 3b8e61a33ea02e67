"""Streaming evaluation (issue 24): `speechcls stream build` and `stream eval`, the operating point that
listen and export then use, and the sliding-frames way of scoring a long recording.

References are built by hand: features of each window by featurize's own FeatureExtractor, posteriors of
each window through the run's whole module, detections and labels written out in the tests."""

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speechcls import config
from speechcls.cli import app
from speechcls.config import FeatureParams, TrainConfig
from speechcls.infer.listen import ListenConfig, decide, smooth

runner = CliRunner()
SR = 16_000
CLASSES = [config.SILENCE, config.UNKNOWN, "yes", "no", "up", "down"]


# --- the sliding way gives the per-window features and posteriors ---------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        FeatureParams(),  # the chapter's spectrogram, normalized
        FeatureParams("mel", n_mels=40),
        FeatureParams("complex"),
        FeatureParams("mel", n_fft=400, win_length=320, hop_length=160, n_mels=64, clip_samples=12_000),
        FeatureParams("spectrogram", n_fft=256, win_length=256, hop_length=80, normalized=False),
    ],
    ids=["spectrogram", "mel40", "complex", "short-window", "n_fft256"],
)
def test_sliding_frames_are_the_windows_features(params):
    from speechcls.audio.features import FeatureExtractor
    from speechcls.infer.stream_frames import FrameSlider, can_slide

    extractor = FeatureExtractor(params)
    rng = np.random.default_rng(0)
    audio = torch.from_numpy((0.1 * rng.standard_normal(5 * SR)).astype(np.float32))
    hop = 1_600
    assert can_slide(params, hop) is None
    starts = np.arange(0, len(audio) - params.clip_samples + 1, hop)
    with torch.no_grad():  # the per-window way: every window through the extractor, centred frames
        reference = extractor(torch.stack([audio[s : s + params.clip_samples] for s in starts])).numpy()
    got = FrameSlider(extractor, params).features(audio, starts).numpy()
    assert got.shape == reference.shape == (len(starts), *params.shape)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6 * float(np.abs(reference).max()))
    # a window start in the middle of a block (the frames computed for windows from `first` on) too
    slider = FrameSlider(extractor, params)
    frames = slider.block(audio, int(starts[0]), int(starts[-1]))
    again = slider.features(audio, starts[3:7], frames, int(starts[0])).numpy()
    np.testing.assert_allclose(again, reference[3:7], rtol=1e-5, atol=1e-6 * float(np.abs(reference).max()))


def test_the_sliding_way_is_refused_where_it_would_not_be_exact():
    from speechcls.infer.stream_frames import can_slide

    assert "no multiple" in can_slide(FeatureParams(), 1_500)  # 1,500 samples is no whole number of 160-sample hops
    assert can_slide(FeatureParams(), 1_600) is None
    assert "waveform" in can_slide(FeatureParams("waveform"), 1_600)


def _checkpoint(tmp: Path, params: FeatureParams = FeatureParams("mel", n_mels=40), classes=CLASSES, cmn=False):
    """A MatchboxNet checkpoint in the trainer's layout with random weights, log-mel standardized (a
    per-window mean over time too where `cmn`), its last layer scaled to confident probabilities."""
    from speechcls.audio.features import FeatureExtractor
    from speechcls.audio.frontend import LOG_EPS, InputSpec, feature_stats
    from speechcls.engine import checkpoint
    from speechcls.engine.setup import model_settings
    from speechcls.models import build_model

    cfg = TrainConfig(model="matchboxnet-3x1x64", log=True, normalize=True, cmn=cmn)
    torch.manual_seed(0)
    model = build_model(cfg.model, params.shape, len(classes), **model_settings(cfg)).eval()
    rng = np.random.default_rng(1)
    waves = torch.from_numpy((0.1 * rng.standard_normal((16, params.clip_samples))).astype(np.float32))
    with torch.no_grad():
        feats = FeatureExtractor(params)(waves)
    mean, std = feature_stats([torch.log(feats + LOG_EPS)])
    with torch.no_grad():
        last = [
            m for m in model.modules() if getattr(m, "weight", None) is not None and m.weight.shape[0] == len(classes)
        ][-1]
        for t in (last.weight, last.bias):
            if t is not None:
                t.mul_(8.0)
    meta = {
        "config": asdict(cfg) | {"store": ""}, "task": "kws12", "classes": list(classes), "params": asdict(params),
        "input": InputSpec(True, LOG_EPS, mean, std, cmn).to_dict(), "in_shape": list(params.shape),
        "n_classes": len(classes), "model_name": cfg.model, "model_cfg": model_settings(cfg), "complexity": {},
        "noise": None,
    }  # fmt: skip
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    return checkpoint.save(run / "best.pt", {**meta, "model": model.state_dict(), "epoch": 1, "valid_loss": 1.0}).parent


def _speechy(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise with bursts: something for a random model to react to."""
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.standard_normal(int(seconds * SR))
    for at in rng.uniform(0, seconds - 1, size=int(seconds / 2)):
        a = int(at * SR)
        x[a : a + SR // 2] += 0.3 * np.sin(np.arange(SR // 2) * rng.uniform(0.02, 0.3)) * np.hanning(SR // 2)
    return x.astype(np.float32)


@pytest.mark.parametrize("cmn", [False, True], ids=["standardized", "cmn"])
def test_sliding_and_per_window_posteriors_agree(tmp_path, cmn):
    from speechcls.infer.listen import choose_way, posteriors
    from speechcls.infer.scorers import open_scorer

    run = _checkpoint(tmp_path, cmn=cmn)
    scorer = open_scorer(run, "cpu")
    audio = _speechy(12.3)
    assert choose_way(scorer, 1_600)[0] == "frames"
    s1, by_windows = posteriors(audio, scorer, 1_600, 16, "windows")
    s2, by_frames = posteriors(audio, scorer, 1_600, 16, "frames")
    assert np.array_equal(s1, s2) and by_frames.shape == (len(s1), len(CLASSES))
    assert by_windows.std() > 0.05  # not a constant model: the comparison means something
    np.testing.assert_allclose(by_frames, by_windows, atol=2e-5)
    # a hop that is no multiple of the features' hop: the per-window way, and `frames` asked for is refused
    assert (
        choose_way(scorer, 1_500) == ("windows", choose_way(scorer, 1_500)[1])
        and "no multiple" in choose_way(scorer, 1_500)[1]
    )
    with pytest.raises(ValueError, match="--way frames"):
        posteriors(audio, scorer, 1_500, 16, "frames")


@pytest.mark.slow
def test_an_onnx_file_slides_as_it_scores_windows(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from speechcls.infer.export import export
    from speechcls.infer.listen import choose_way, posteriors
    from speechcls.infer.scorers import open_scorer

    run = _checkpoint(tmp_path)
    onnx_file = export(run, "onnx")["path"]
    scorer = open_scorer(onnx_file, "cpu")
    audio = _speechy(6.0)
    assert choose_way(scorer, 1_600, "frames")[0] == "frames" and choose_way(scorer, 1_600)[0] == "windows"
    _, by_windows = posteriors(audio, scorer, 1_600, 16, "windows")  # the file's own STFT per window
    _, by_frames = posteriors(audio, scorer, 1_600, 16, "frames")  # torch's frames, the file's classifier
    _, by_torch = posteriors(audio, open_scorer(run, "cpu"), 1_600, 16, "windows")
    np.testing.assert_allclose(by_frames, by_windows, atol=1e-4)
    np.testing.assert_allclose(by_frames, by_torch, atol=1e-4)


# --- stream build ---------------------------------------------------------------------------------------
def _noise_dir(tmp: Path, seconds: float = 30.0) -> Path:
    """One recording whose regions tell apart: the test region ([0.9, 1.0)) all below zero, the rest above."""
    folder = tmp / "noise"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    n = int(seconds * SR)
    x = 0.3 + 0.02 * rng.standard_normal(n)
    x[round(0.9 * n) :] = -0.3 + 0.02 * rng.standard_normal(n - round(0.9 * n))
    sf.write(folder / "regions.wav", x.astype(np.float32), SR, subtype="PCM_16")
    return folder


def _build(prefix: Path, tree: Path, *args: str) -> dict:
    r = runner.invoke(app, ["stream", "build", "--root", str(tree), "--out", str(prefix), *args])
    assert r.exit_code == 0, r.output
    return json.loads(prefix.with_suffix(".json").read_text())


def _labels(path: Path) -> list[tuple[str, float, float]]:
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["word", "start", "end"]
    return [(w, float(a), float(b)) for w, a, b in rows[1:]]


def test_a_stream_is_deterministic_from_its_seed(synth_tree, tmp_path):
    _build(tmp_path / "a", synth_tree, "--minutes", "0.5", "--seed", "3")
    _build(tmp_path / "b", synth_tree, "--minutes", "0.5", "--seed", "3")
    _build(tmp_path / "c", synth_tree, "--minutes", "0.5", "--seed", "4")
    a, b, c = (tmp_path / f"{x}.wav" for x in "abc")
    assert a.read_bytes() == b.read_bytes() and (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert a.read_bytes() != c.read_bytes()


def test_labels_lie_inside_the_audio_and_never_overlap(synth_tree, tmp_path):
    record = _build(
        tmp_path / "s", synth_tree, "--minutes", "1", "--split", "train", "--keywords", "yes,no", "--snr-db", "15,20"
    )
    audio, rate = sf.read(tmp_path / "s.wav", dtype="float32")
    assert rate == SR and audio.ndim == 1 and len(audio) == 60 * SR
    labels = _labels(tmp_path / "s.csv")
    assert len(labels) >= 10
    assert all(0 <= a < b <= len(audio) / SR for _, a, b in labels)
    assert all(b1 <= a2 for (_, _, b1), (_, a2, _) in zip(labels, labels[1:]))  # in time order, no overlap
    assert {w for w, *_ in labels} <= {"yes", "no", config.UNKNOWN} and config.UNKNOWN in {w for w, *_ in labels}
    # every clip comes from the split asked for: train is what neither list names
    held = set((synth_tree / config.TESTING_LIST).read_text().split()) | set(
        (synth_tree / config.VALIDATION_LIST).read_text().split()
    )
    assert record["clips"] and not {c["path"] for c in record["clips"]} & held
    # the words are where the labels say: louder there than in the background just before
    for w, a, b in labels[:5]:
        inside = np.sqrt(np.mean(audio[int(a * SR) : int(b * SR)] ** 2))
        before = np.sqrt(np.mean(audio[int((a - 0.6) * SR) : int((a - 0.4) * SR)] ** 2))
        assert inside > 1.5 * before, (w, a, b)


def test_the_background_comes_from_the_splits_region_only(synth_tree, tmp_path):
    noise = _noise_dir(tmp_path)
    for split, sign in (("test", -1), ("train", +1)):
        _build(tmp_path / split, synth_tree, "--minutes", "0.5", "--split", split, "--noise-dir", str(noise),
               "--no-keywords", "--unknown-share", "0")  # fmt: skip
        audio, _ = sf.read(tmp_path / f"{split}.wav", dtype="float32")
        assert _labels(tmp_path / f"{split}.csv") == []  # no word at all: the background alone
        assert (sign * audio > 0).all(), split  # test: only the last 10 % (negative); train: never it


def test_no_keywords_keeps_the_same_timeline_without_the_keywords(synth_tree, tmp_path):
    _build(tmp_path / "with", synth_tree, "--minutes", "0.5", "--keywords", "yes,no", "--unknown-share", "0.5")
    record = _build(tmp_path / "without", synth_tree, "--minutes", "0.5", "--keywords", "yes,no",
                    "--unknown-share", "0.5", "--no-keywords")  # fmt: skip
    with_, without = _labels(tmp_path / "with.csv"), _labels(tmp_path / "without.csv")
    assert [x for x in with_ if x[0] == config.UNKNOWN] == without and record["keywords_left_out"] > 0
    assert record["keywords"] == ["yes", "no"]  # what stream eval reports, though none was placed


@pytest.mark.parametrize(
    "args, words",
    [
        (["--minutes", "0"], "--minutes must be"),
        (["--snr-db", "20,5"], "low end is above the high end"),
        (["--snr-db", "loud"], "give two numbers"),
        (["--unknown-share", "1.5"], "--unknown-share must be"),
        (["--keywords", "yes,sheila"], "--keywords sheila: no such word folder"),
        (["--split", "dev"], "--split 'dev'"),
    ],
)
def test_bad_build_options_are_one_line(synth_tree, tmp_path, args, words):
    r = runner.invoke(app, ["stream", "build", "--root", str(synth_tree), "--out", str(tmp_path / "s"), *args])
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and words in lines[0], r.output


def test_a_tree_without_noise_asks_for_a_noise_folder(synth_tree, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    shutil.copytree(synth_tree, tree, ignore=shutil.ignore_patterns(config.BACKGROUND_DIR))
    r = runner.invoke(app, ["stream", "build", "--root", str(tree), "--out", str(tmp_path / "s")])
    assert r.exit_code == 1 and "pass --noise-dir" in r.output and "Traceback" not in r.output


# --- matching -------------------------------------------------------------------------------------------
def _det(word: str, t: float) -> dict:
    return {"word": word, "time": t, "start": t - 0.2, "end": t + 0.2, "confidence": 0.9}


def _lab(word: str, a: float, b: float) -> dict:
    return {"word": word, "start": a, "end": b}


def test_matching_rules():
    from speechcls.infer.stream_eval import match

    labels = [_lab("yes", 1.0, 1.5), _lab("no", 4.0, 4.4), _lab(config.UNKNOWN, 7.0, 7.5), _lab("yes", 10.0, 10.4),
              _lab("no", 13.0, 13.5)]  # fmt: skip
    found = [
        _det("yes", 1.3),  # hit
        _det("yes", 1.8),  # the same label again: a false accept
        _det("yes", 4.2),  # on the "no": wrong (and the "no" is missed)
        _det("no", 7.2),  # on a distractor: a false accept
        _det("up", 20.0),  # a word the stream does not ask for: never reported, not counted
        _det("no", 13.4),  # hit
        # the "yes" at 10.0 has none: a false reject
        _det("no", 17.0),  # in the background: a false accept
    ]
    c = match(found, labels, ["yes", "no"], tolerance_s=0.5)
    assert c["per_word"]["yes"] == {"labels": 2, "hits": 1, "false_accepts": 1, "wrongs": 0}
    assert c["per_word"]["no"] == {"labels": 2, "hits": 1, "false_accepts": 2, "wrongs": 1}
    assert c["all"] == {"labels": 4, "hits": 2, "false_accepts": 3, "wrongs": 1}
    # the tolerance: 0.4 s after a label's end is on it at 0.5 s, off it at 0.3 s
    assert match([_det("yes", 1.9)], labels, ["yes", "no"], 0.5)["all"]["hits"] == 1
    assert match([_det("yes", 1.9)], labels, ["yes", "no"], 0.3)["all"] == {
        "labels": 4, "hits": 0, "false_accepts": 1, "wrongs": 0,
    }  # fmt: skip


# --- the sweep and the operating point --------------------------------------------------------------------
def _stream_scores(hop: float = 0.1):
    """Smoothed scores of a 1-hour stream seen through a model's eyes: "yes" labels at 10, 20, 30, 40 s heard
    at 0.99, 0.9, 0.7, 0.52, and false alarms of "yes" in the background at 0.95 (once) and 0.6 (twice)."""
    n = int(3600 / hop)
    starts = np.arange(n) * hop
    scores = np.zeros((n, len(CLASSES)), np.float32)
    scores[:, 0] = 1.0
    events = [(10, 0.99), (20, 0.9), (30, 0.7), (40, 0.52), (1000, 0.95), (2000, 0.6), (3000, 0.6)]
    for at, p in events:
        i = int(at / hop)
        scores[i - 3 : i + 3] = [1 - p, 0, p, 0, 0, 0]
    labels = [_lab("yes", t + 0.35, t + 0.65) for t in (10, 20, 30, 40)]  # the windows start 0.3 s before
    return scores, starts, labels


def test_the_sweep_and_the_operating_point():
    from speechcls.infer.stream_eval import operating_point, sweep

    scores, starts, labels = _stream_scores()
    cfg = ListenConfig(smooth_ms=0)
    rows = sweep(
        scores, CLASSES, starts, 1.0, cfg, labels, ["yes"], 1.0, 0.5, thresholds=(0.4, 0.55, 0.65, 0.8, 0.92, 0.97)
    )
    total = {r["threshold"]: r for r in rows if r["word"] == "all"}
    assert [total[t]["frr"] for t in (0.4, 0.55, 0.65, 0.8, 0.92, 0.97)] == [0, 0.25, 0.25, 0.5, 0.75, 0.75]
    assert [total[t]["fa_per_hour"] for t in (0.4, 0.55, 0.65, 0.8, 0.92, 0.97)] == [3, 3, 1, 1, 1, 0]
    assert {r["word"] for r in rows} == {"all", "yes"}
    # lowest FRR with FA/h <= target; a tie in FRR goes to fewer FA/h, then the higher threshold (0.92, 0.97)
    assert operating_point(rows, 1.0)["threshold"] == 0.65
    assert operating_point(rows, 3.0)["threshold"] == 0.4
    assert operating_point(rows, 0.0)["threshold"] == 0.97
    rows_no_zero = [r for r in rows if r["threshold"] != 0.97]
    assert operating_point(rows_no_zero, 0.5) is None  # never reached


def test_the_sweep_decides_as_listen_does():
    """One code path: the sweep's detections at a threshold are listen's detect at it."""
    from speechcls.infer.listen import detect
    from speechcls.infer.stream_eval import match

    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.3, size=3000).astype(np.float32)
    starts = np.arange(3000) * 0.1
    cfg = ListenConfig(threshold=0.6, smooth_ms=300, refractory_ms=700)
    by_listen = detect(probs, CLASSES, starts, 1.0, cfg)
    by_sweep = decide(smooth(probs, 3), CLASSES, starts, 1.0, 0.6, 700.0)
    assert by_listen == by_sweep and by_listen
    assert match(by_listen, [], ["yes", "no", "up", "down"], 0.5)["all"]["false_accepts"] == len(by_listen)


def _reference_decide(scores, classes, starts_s, clip_s, threshold, refractory_ms, min_windows=1):
    """listen's decisions as issue 16 wrote them, a loop over the windows: the vectorized `decide` must agree."""
    top = scores.argmax(axis=1)
    best = scores[np.arange(len(top)), top]
    reported = np.array([c not in (config.SILENCE, config.UNKNOWN) for c in classes])
    active = reported[top] & (best > threshold)
    runs, i = [], 0
    while i < len(top):
        if not active[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(top) and active[j + 1] and top[j + 1] == top[i]:
            j += 1
        if j - i + 1 >= min_windows:
            runs.append((int(top[i]), i, j))
        i = j + 1
    found, last = [], {}
    for k, i, j in runs:
        first_end, last_start = starts_s[i] + clip_s, starts_s[j]
        det = {"word": classes[k], "start": float(min(last_start, first_end)), "end": float(max(last_start, first_end)),
               "time": float((first_end + last_start) / 2),
               "confidence": float(scores[i : j + 1, k].max())}  # fmt: skip
        prev = last.get(k)
        if prev is not None and (det["time"] - prev["time"]) * 1000 < refractory_ms:
            prev["end"], prev["confidence"] = max(prev["end"], det["end"]), max(prev["confidence"], det["confidence"])
            continue
        found.append(det)
        last[k] = det
    return [{**d, **{t: round(d[t], 3) for t in ("start", "end", "time")}} for d in found]


@pytest.mark.parametrize("min_windows", [1, 3])
def test_decisions_match_the_loop_they_replace(min_windows):
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(len(CLASSES)) * 0.2, size=4000).astype(np.float32)
    scores, starts = smooth(probs, 3), np.arange(4000) * 0.1
    got = decide(scores, CLASSES, starts, 1.0, 0.55, 600.0, None, min_windows)
    assert got == _reference_decide(scores, CLASSES, starts, 1.0, 0.55, 600.0, min_windows) and got


def test_the_consecutive_window_rule_drops_short_runs():
    scores = np.zeros((40, len(CLASSES)), np.float32)
    scores[:, 0] = 1
    scores[5:7] = [0.05, 0, 0.95, 0, 0, 0]  # "yes" for 2 windows
    scores[20:25] = [0.05, 0, 0, 0.95, 0, 0]  # "no" for 5
    starts = np.arange(40) * 0.1
    assert [d["word"] for d in decide(scores, CLASSES, starts, 1.0, 0.5, 0.0, None, 1)] == ["yes", "no"]
    assert [d["word"] for d in decide(scores, CLASSES, starts, 1.0, 0.5, 0.0, None, 3)] == ["no"]
    assert decide(scores, CLASSES, starts, 1.0, 0.5, 0.0, None, 6) == []


# --- the command, the operating point used ----------------------------------------------------------------
@pytest.fixture()
def judged(synth_tree, tmp_path):
    """A random run judged on a 1-minute stream from the synthetic tree's test split."""
    run = _checkpoint(tmp_path)
    _build(tmp_path / "s", synth_tree, "--minutes", "1")
    r = runner.invoke(app, ["stream", "eval", str(run), str(tmp_path / "s.wav"), "--labels", str(tmp_path / "s.csv"),
                            "--device", "cpu", "--target-fa-per-hour", "1000"])  # fmt: skip
    assert r.exit_code == 0, r.output
    return run, tmp_path / "s", r.output


def test_stream_eval_writes_the_sweep_and_the_operating_point(judged):
    run, prefix, output = judged
    rows = list(csv.DictReader((run / "streaming.csv").open()))
    assert {"threshold", "frr", "fa_per_hour", "wrong"} <= set(rows[0])
    assert {r["word"] for r in rows} == {"all", "yes", "no", "up", "down"}
    record = json.loads((run / "streaming.json").read_text())
    point = record["operating_point"]
    allrows = [r for r in rows if r["word"] == "all"]
    eligible = [r for r in allrows if float(r["fa_per_hour"]) <= 1000]
    assert point is not None and float(point["fa_per_hour"]) <= 1000
    assert point["frr"] == min(float(r["frr"]) for r in eligible)
    assert f"operating point: threshold {point['threshold']:g}" in output
    assert record["listen"] == {"hop_ms": 100.0, "smooth_ms": 500.0, "refractory_ms": 1000.0, "min_windows": 1}


def test_listen_takes_the_operating_point(judged):
    from speechcls.infer.listen import listen

    run, prefix, _ = judged
    point = json.loads((run / "streaming.json").read_text())["operating_point"]
    (r,) = listen(run, [prefix.with_suffix(".wav")], device="cpu")
    assert r["threshold"] == point["threshold"] and str(run / "streaming.json") in r["threshold_from"]
    out = runner.invoke(app, ["listen", str(run), str(prefix.with_suffix(".wav")), "--device", "cpu"])
    assert out.exit_code == 0 and f"threshold {point['threshold']:g}: the operating point" in out.output
    given = runner.invoke(app, ["listen", str(run), str(prefix.with_suffix(".wav")), "--threshold", "0.55"])
    assert given.exit_code == 0 and "threshold 0.55: --threshold" in given.output
    # other smoothing than measured with: still taken, with a warning
    other = runner.invoke(app, ["listen", str(run), str(prefix.with_suffix(".wav")), "--smooth-ms", "0"])
    assert other.exit_code == 0 and "warning:" in other.output and "does not hold" in other.output
    (run / "streaming.json").unlink()  # none measured: the default, said so
    (r,) = listen(run, [prefix.with_suffix(".wav")], device="cpu")
    assert r["threshold"] == 0.8 and "the default" in r["threshold_from"]


@pytest.mark.slow
def test_the_export_carries_the_operating_point(judged):
    pytest.importorskip("onnxruntime")
    from speechcls.infer.export import export
    from speechcls.infer.listen import listen
    from speechcls.infer.scorers import read_onnx_metadata

    run, prefix, _ = judged
    point = json.loads((run / "streaming.json").read_text())["operating_point"]
    onnx_file = export(run, "onnx")["path"]
    assert json.loads(read_onnx_metadata(onnx_file)["operating_point"])["threshold"] == point["threshold"]
    (r,) = listen(onnx_file, [prefix.with_suffix(".wav")], device="cpu")
    assert r["threshold"] == point["threshold"] and "metadata" in r["threshold_from"]


# --- bad input ------------------------------------------------------------------------------------------
def _one_error(r, words: str) -> None:
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 1, r.output
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.output


@pytest.fixture()
def bad_inputs(tmp_path):
    run = _checkpoint(tmp_path)
    wav = tmp_path / "s.wav"
    sf.write(wav, _speechy(20.0), SR, subtype="PCM_16")
    return run, wav, tmp_path


@pytest.mark.parametrize(
    "labels, words",
    [
        ("word,start,end\nsheila,1.0,1.5\n", "sheila is no class of the model"),
        ("word,start,end\nyes,19.5,21.0\n", "past the end of the audio"),
        ("word,start,end\nyes,1.0,2.0\nno,1.5,2.5\n", "overlap"),
        ("", "the file is empty"),
        ("start,end\n1,2\n", "not the header word,start,end"),
        ("word,start,end\nyes,2.0,1.0\n", "need 0 <= start < end"),
        ("word,start,end\nyes,one,two\n", "must be seconds"),
    ],
    ids=["unknown-word", "past-the-end", "overlapping", "empty", "no-header", "reversed", "not-numbers"],
)
def test_bad_labels_are_one_line(bad_inputs, labels, words):
    run, wav, tmp = bad_inputs
    (tmp / "s.csv").write_text(labels)
    _one_error(runner.invoke(app, ["stream", "eval", str(run), str(wav), "--labels", str(tmp / "s.csv")]), words)
    assert not (run / "streaming.csv").exists()


@pytest.mark.parametrize(
    "kind, words",
    [
        ("stereo", "2 channels"),
        ("8k", "8000 Hz, the model hears 16000 Hz"),
        ("short", "shorter than one window"),
        ("missing", "no such file"),
        ("not-audio", "not readable audio"),
    ],  # fmt: skip
)
def test_bad_streams_are_one_line(bad_inputs, kind, words):
    run, _, tmp = bad_inputs
    wav = tmp / f"{kind}.wav"
    if kind == "stereo":
        sf.write(wav, np.stack([_speechy(3.0)] * 2, axis=1), SR, subtype="PCM_16")
    elif kind == "8k":
        sf.write(wav, _speechy(3.0)[::2], 8_000, subtype="PCM_16")
    elif kind == "short":
        sf.write(wav, _speechy(3.0)[: SR // 2], SR, subtype="PCM_16")
    elif kind == "not-audio":
        wav.write_bytes(b"RIFF not a wav")
    (tmp / "s.csv").write_text("word,start,end\n")
    _one_error(runner.invoke(app, ["stream", "eval", str(run), str(wav), "--labels", str(tmp / "s.csv")]), words)


def test_a_run_without_silence_and_unknown_is_judged_and_says_so(tmp_path):
    run = _checkpoint(tmp_path, classes=["yes", "no", "up", "down"])
    wav = tmp_path / "s.wav"
    sf.write(wav, _speechy(20.0), SR, subtype="PCM_16")
    (tmp_path / "s.csv").write_text("word,start,end\nyes,2.0,2.5\n_unknown_,5.0,5.5\n")
    r = runner.invoke(
        app, ["stream", "eval", str(run), str(wav), "--labels", str(tmp_path / "s.csv"), "--device", "cpu"]
    )
    assert r.exit_code == 0, r.output
    assert "note: the model has no _silence_ or _unknown_ class" in r.output
    assert json.loads((run / "streaming.json").read_text())["keywords"] == ["yes"]  # the labels' words


# --- the DET plot and the report's section ----------------------------------------------------------------
def test_plot_det_and_the_report_section(judged, tmp_path):
    from PIL import Image

    from speechcls.engine.run_dir import RunDir

    run, _, _ = judged
    out = tmp_path / "det.png"
    r = runner.invoke(app, ["plot", "det", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (900, 550)
    # the report: a section with the run's operating point and the DET curve (needs the run's other files)
    RunDir(run).write_metrics({"test_acc": 0.5, "test_loss": 1.0, "epochs_run": 1, "classes": CLASSES,
                               "per_class_acc": {}, "confusion": np.eye(len(CLASSES)).tolist()})  # fmt: skip
    (run / "log.csv").write_text('"epoch","set","loss","acc"\n1,"train",1.0,0.5\n1,"valid",1.0,0.5\n')
    page = tmp_path / "report.html"
    r = runner.invoke(app, ["report", str(run), "--out", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    point = json.loads((run / "streaming.json").read_text())["operating_point"]
    assert "Keyword spotting on a stream" in text and "alt='DET curve of run'" in text
    assert f"<td>{point['threshold']:g} (FRR" in text
    # a run never judged: no section, no error
    (run / "streaming.json").unlink()
    r = runner.invoke(app, ["report", str(run), "--out", str(page)])
    assert r.exit_code == 0 and "Keyword spotting on a stream" not in page.read_text()
    (run / "streaming.csv").unlink()
    r = runner.invoke(app, ["plot", "det", str(run), "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "run `speechcls stream eval" in r.output and "Traceback" not in r.output
