"""Listen (issue 16): keywords in long recordings, from a run (torch) or an exported ONNX file.

The decision logic is held to posteriors built by hand; the whole command to a model trained here (the
real trainer, kws12 task, so `_silence_` and `_unknown_` are classes) on espeak-ng words, listening to a
recording of known words at known times between stretches of digital silence and of noise."""

import json
import time
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
from speechcls.infer.listen import DEFAULT_THRESHOLD, ListenConfig, detect, smooth, smooth_width, window_starts

runner = CliRunner()
SR = 16_000
KEYWORDS = ("yes", "no", "up", "down")
OTHERS = ("cat", "dog")  # kws12's _unknown_: never reported
TOL_S = 0.15  # a keyword is found when a detection of it lies on the word, give or take 150 ms


# --- windows, smoothing, decisions ---------------------------------------------------------------------
def test_windows_cover_the_recording():
    assert window_starts(0, 16_000, 1_600).tolist() == [0]  # an empty or short file: one padded window
    assert window_starts(16_000, 16_000, 1_600).tolist() == [0]
    assert window_starts(16_001, 16_000, 1_600).tolist() == [0, 1_600]  # the last window reaches the end
    starts = window_starts(48_000, 16_000, 1_600)
    assert starts[-1] == 32_000 and len(starts) == 21 and np.all(np.diff(starts) == 1_600)


def test_smoothing_is_a_centred_moving_average():
    rng = np.random.default_rng(0)
    p = rng.random((40, 3)).astype(np.float32)
    got = smooth(p, 5)
    for i in range(40):  # the windows present at the edges
        np.testing.assert_allclose(got[i], p[max(0, i - 2) : i + 3].mean(axis=0), rtol=1e-6)
    assert smooth_width(ListenConfig(hop_ms=100, smooth_ms=500)) == 5
    assert smooth_width(ListenConfig(hop_ms=100, smooth_ms=400)) == 5  # made odd: centred
    assert smooth_width(ListenConfig(hop_ms=30, smooth_ms=500)) == 17
    assert smooth_width(ListenConfig(hop_ms=100, smooth_ms=0)) == 1


def _posteriors(n: int, hop: float, words: list[tuple[int, float, float]], k: int = 4, p: float = 0.96):
    """Posteriors of windows starting every `hop` s: class k_word wherever the window (1 s) holds the whole
    word [a, b], class 0 (_silence_) elsewhere."""
    starts = np.arange(n) * hop
    probs = np.full((n, k), (1 - p) / (k - 1), dtype=np.float32)
    probs[:, 0] = p
    for cls, a, b in words:
        hold = (starts <= a + 1e-9) & (starts + 1 >= b - 1e-9)
        probs[hold] = (1 - p) / (k - 1)
        probs[hold, cls] = p
    return starts, probs


def test_a_word_is_found_where_it_lies():
    classes = [config.SILENCE, config.UNKNOWN, "yes", "no"]
    starts, probs = _posteriors(80, 0.1, [(2, 2.0, 2.4), (1, 4.0, 4.5), (3, 6.2, 6.5)])
    found = detect(probs, classes, starts, 1.0, ListenConfig(smooth_ms=0))
    # windows starting 1.4 ... 2.0 hold "yes": it lies in [last start, first end] = [2.0, 2.4]
    assert [(d["word"], d["start"], d["end"], d["time"]) for d in found] == [
        ("yes", 2.0, 2.4, 2.2),
        ("no", 6.2, 6.5, 6.35),
    ]  # the _unknown_ word at 4.0 is not reported
    assert all(abs(d["confidence"] - 0.96) < 1e-6 for d in found)
    smoothed = detect(probs, classes, starts, 1.0, ListenConfig(smooth_ms=500))
    assert [d["word"] for d in smoothed] == ["yes", "no"]
    assert all(abs(s["time"] - d["time"]) <= 0.05 + 1e-9 for s, d in zip(smoothed, found))  # centred: no lag
    assert detect(probs, classes, starts, 1.0, ListenConfig(threshold=0.96, smooth_ms=0)) == []  # must exceed it


def test_a_repeat_within_the_refractory_time_counts_once():
    classes = [config.SILENCE, config.UNKNOWN, "yes", "no"]
    # "yes" at 2.0 and 3.5 (silence between: two runs of windows, 1.5 s apart), "no" at 6.0
    starts, probs = _posteriors(90, 0.1, [(2, 2.0, 2.3), (2, 3.5, 3.8), (3, 6.0, 6.3)])
    found = detect(probs, classes, starts, 1.0, ListenConfig(smooth_ms=0, refractory_ms=1000))
    assert [(d["word"], d["start"], d["end"]) for d in found] == [
        ("yes", 2.0, 2.3),
        ("yes", 3.5, 3.8),
        ("no", 6.0, 6.3),
    ]
    merged = detect(probs, classes, starts, 1.0, ListenConfig(smooth_ms=0, refractory_ms=2000))
    assert [(d["word"], d["start"], d["end"]) for d in merged] == [("yes", 2.0, 3.8), ("no", 6.0, 6.3)]
    # said again 0.5 s later: every window from the first word's end - 1 s to the second's start holds a
    # "yes", one run, one detection between the first word's end and the last one's start
    starts, probs = _posteriors(60, 0.1, [(2, 2.0, 2.3), (2, 2.8, 3.1)])
    (once,) = detect(probs, classes, starts, 1.0, ListenConfig(smooth_ms=0, refractory_ms=0))
    assert (once["word"], once["start"], once["end"]) == ("yes", 2.3, 2.8)


@pytest.mark.parametrize(
    "option, value, words",
    [("--hop-ms", "0", "--hop-ms must be positive"), ("--threshold", "1.5", "--threshold must be in [0, 1)")],
)
def test_bad_options_are_one_error_line(option, value, words, tmp_path):
    r = runner.invoke(app, ["listen", str(tmp_path), str(tmp_path / "x.wav"), option, value])
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and words in lines[0], r.output


# --- torch and ONNX listen alike ---------------------------------------------------------------------
def _checkpoint(tmp: Path, mini_root: Path) -> Path:
    """A MatchboxNet checkpoint of 12 words in the trainer's layout (engine/setup.py's Setup.meta()), random
    weights, log-mel standardized: enough to hold the torch and ONNX paths to each other."""
    from speechcls.audio.features import FeatureExtractor
    from speechcls.audio.frontend import LOG_EPS, InputSpec, feature_stats
    from speechcls.engine import checkpoint
    from speechcls.engine.setup import model_settings
    from speechcls.models import build_model

    params = FeatureParams("mel", n_mels=40)
    classes = list(config.V001_WORDS[:12])
    cfg = TrainConfig(model="matchboxnet-3x1x64", log=True, normalize=True)
    torch.manual_seed(0)
    model = build_model(cfg.model, params.shape, len(classes), **model_settings(cfg)).eval()
    waves = [sf.read(p, dtype="float32")[0] for p in sorted(mini_root.glob("*/*.wav"))[:40]]
    with torch.no_grad():
        feats = FeatureExtractor(params)(torch.from_numpy(np.stack([np.resize(w, SR) for w in waves])))
    mean, std = feature_stats([torch.log(feats + LOG_EPS)])
    with torch.no_grad():  # a last layer scaled to confident (far from uniform) probabilities
        last = [m for m in model.modules() if getattr(m, "weight", None) is not None and m.weight.shape[0] == 12][-1]
        std_t = torch.tensor(std, dtype=torch.float32)[None, :, :, None]
        logits = model((torch.log(feats + LOG_EPS) - torch.tensor(mean)[None, :, :, None]) / std_t)
        for t in (last.weight, last.bias):
            if t is not None:
                t.mul_(4.0 / float(logits.std()))
    meta = {
        "config": asdict(cfg) | {"store": ""}, "task": "words", "classes": classes, "params": asdict(params),
        "input": InputSpec(True, LOG_EPS, mean, std).to_dict(), "in_shape": list(params.shape),
        "n_classes": len(classes), "model_name": cfg.model, "model_cfg": model_settings(cfg), "complexity": {},
        "noise": None,
    }  # fmt: skip
    return checkpoint.save(tmp / "best.pt", {**meta, "model": model.state_dict(), "epoch": 1, "valid_loss": 1.0})


def test_a_run_and_its_onnx_file_listen_alike(mini_root, tmp_path):
    pytest.importorskip("onnxruntime")
    from speechcls.infer.export import export
    from speechcls.infer.listen import posteriors
    from speechcls.infer.scorers import open_scorer

    run = _checkpoint(tmp_path, mini_root).parent
    onnx_file = export(run, "onnx")["path"]
    clips = sorted(mini_root.glob("*/*.wav"))[::50]
    audio = np.concatenate(
        [np.concatenate([np.zeros(SR // 2, np.float32), sf.read(c, dtype="float32")[0]]) for c in clips]
    )
    wav = tmp_path / "five_words.wav"
    sf.write(wav, audio, SR, subtype="FLOAT")
    _, by_torch = posteriors(audio, open_scorer(run, "cpu"), 1_600)
    _, by_onnx = posteriors(audio, open_scorer(onnx_file, "cpu"), 1_600)
    assert by_torch.shape == (len(window_starts(len(audio), SR, 1_600)), 12)
    assert np.abs(by_torch - by_onnx).max() < 1e-4
    # the command from both: the same detections (a random model: a low threshold gives some)
    outs = []
    for model in (run, onnx_file):
        r = runner.invoke(app, ["listen", str(model), str(wav), "--threshold", "0.3", "--json", "--device", "cpu"])
        assert r.exit_code == 0, r.output
        (res,) = json.loads(r.stdout)
        assert res["seconds"] == pytest.approx(len(audio) / SR) and res["windows"] == len(by_torch)
        outs.append([(d["word"], d["start"], d["end"]) for d in res["detections"]])
    assert outs[0] == outs[1] and outs[0], outs
    # a file exported without its front end takes features, not waveforms: refused with what to do
    features_file = export(run, "onnx", frontend=False)["path"]
    r = runner.invoke(app, ["listen", features_file, str(wav)])
    assert r.exit_code == 1 and "export again with --with-frontend" in r.output
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    r = runner.invoke(app, ["listen", str(run), str(bad), str(wav), "--json", "--device", "cpu"])
    assert r.exit_code == 1  # the bad file has its error; the other is still listened to
    results = json.loads(r.stdout)
    assert "not readable audio" in results[0]["error"] and "detections" in results[1]


# --- a model trained here, a long recording ------------------------------------------------------------
EPOCHS, VOICES, TAKES = 20, 8, 6  # seen: recall 1.0, precision 1.0; 12 epochs x 4 takes: recall 0.84


def _speech(path: Path) -> np.ndarray:
    x = sf.read(path, dtype="float32")[0]
    idx = np.flatnonzero(np.abs(x) > 1e-3)
    return x[idx[0] : idx[-1] + 1]


@pytest.fixture(scope="module")
def spotter(espeak, tmp_path_factory):
    """MatchboxNet trained by the real trainer on the kws12 task over espeak-ng's yes / no / up / down
    (cat and dog are _unknown_; _silence_ is cut from the tree's noise): every synthesized word taken
    TAKES times at random offsets over a little noise, 40 log-mel bins standardized, EPOCHS epochs."""
    from speechcls.data.synth import synthesize
    from speechcls.engine.fit import fit
    from speechcls.featurize import featurize

    base = tmp_path_factory.mktemp("listen")
    src = base / "synth"
    synthesize(src, words=KEYWORDS + OTHERS, voices=VOICES, seed=5)
    noise_dir = src / config.BACKGROUND_DIR
    noises = [sf.read(p, dtype="float32")[0] for p in sorted(noise_dir.glob("*.wav"))]
    tree, rng = base / "tree", np.random.default_rng(0)
    tree.mkdir()
    for name in (config.VALIDATION_LIST, config.TESTING_LIST):  # the same speakers held out
        lines = [x.replace("_nohash_0", f"_nohash_{k}") for x in (src / name).read_text().split() for k in range(TAKES)]
        (tree / name).write_text("".join(x + "\n" for x in lines))
    for wav in sorted(src.glob("[!_]*/*.wav")):
        x = _speech(wav)
        for k in range(TAKES):
            clip = np.zeros(SR, np.float32)
            at = int(rng.integers(0, SR - len(x) + 1))
            clip[at : at + len(x)] = x
            noise = noises[int(rng.integers(len(noises)))]
            s = int(rng.integers(0, int(0.8 * len(noise)) - SR))  # the noise files' first 80 %: train's region
            clip += rng.uniform(0, 0.1) * noise[s : s + SR]
            (tree / wav.parent.name).mkdir(exist_ok=True)
            sf.write(tree / wav.parent.name / wav.name.replace("_nohash_0", f"_nohash_{k}"), clip, SR, subtype="PCM_16")
    store = featurize(FeatureParams("mel", n_mels=40), tree, out=base / "mel.zarr", backend="torch", device="cpu").store
    cfg = TrainConfig(
        store=str(store), device="cpu", model="matchboxnet-3x1x64", task="kws12", noise_dir=str(noise_dir),
        log=True, normalize=True, batch_size=16, epochs=EPOCHS, min_epochs=EPOCHS,
    )  # fmt: skip
    metrics = fit(cfg, base / "run")
    print(f"spotter: test accuracy {metrics['test_acc']:.3f} (held-out voices, one-second clips)")
    return base, src, noise_dir, noises


def _recording(src: Path, noises: list[np.ndarray], path: Path) -> tuple[list[dict], list[tuple[float, float]]]:
    """Every synthesized word once, shuffled, each after 1.2 to 2 s of digital silence or of noise (the
    noise files' last 10 %, which no training clip used, at 0.05 to 0.2 of its level). Returns the words
    (word, start, end in seconds) and the quiet stretches."""
    rng = np.random.default_rng(1)
    words = [(w.parent.name, _speech(w)) for w in sorted(src.glob("[!_]*/*.wav"))]
    parts, truth, quiet, t = [np.zeros(SR // 2, np.float32)], [], [], SR // 2
    for k, i in enumerate(rng.permutation(len(words))):
        gap = int(rng.uniform(1.2, 2.0) * SR)
        if k % 2:
            region = noises[k % len(noises)][int(0.9 * len(noises[k % len(noises)])) :]
            s = int(rng.integers(0, len(region) - gap))
            parts.append((rng.uniform(0.05, 0.2) * region[s : s + gap]).astype(np.float32))
        else:
            parts.append(np.zeros(gap, np.float32))
        quiet.append((t / SR, (t + gap) / SR))
        t += gap
        word, x = words[i]
        truth.append({"word": word, "start": t / SR, "end": (t + len(x)) / SR})
        parts.append(x)
        t += len(x)
    parts.append(np.zeros(SR, np.float32))
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return truth, quiet


@pytest.mark.slow
def test_every_keyword_is_found_where_it_was_placed(spotter):
    from speechcls.infer.listen import listen

    base, src, noise_dir, noises = spotter
    truth, quiet = _recording(src, noises, base / "long.wav")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the real-time factor on one thread
    try:
        (r,) = listen(base / "run", [base / "long.wav"], ListenConfig(), device="cpu")
    finally:
        torch.set_num_threads(threads)
    found = r["detections"]
    on = lambda d, w: w["start"] - TOL_S <= d["time"] <= w["end"] + TOL_S  # noqa: E731
    keywords = [w for w in truth if w["word"] in KEYWORDS]
    missed = [w for w in keywords if not any(d["word"] == w["word"] and on(d, w) for d in found)]
    right = [d for d in found if any(d["word"] == w["word"] and on(d, w) for w in keywords)]
    in_quiet = [d for d in found if not any(on(d, w) for w in truth)]
    errors = [
        d["time"] - (w["start"] + w["end"]) / 2 for d in right for w in keywords if d["word"] == w["word"] and on(d, w)
    ]
    print(
        f"{r['seconds']:.0f} s, {len(keywords)} keywords and {len(truth) - len(keywords)} other words: recall "
        f"{1 - len(missed) / len(keywords):.3f}, precision {len(right) / max(1, len(found)):.3f}; detection time - "
        f"word centre: mean {np.mean(errors):+.3f} s, largest {np.max(np.abs(errors)):.3f} s; {r['realtime']:.1f} "
        "s of audio per second of compute (one thread)"
    )
    assert not missed, missed
    assert not in_quiet, in_quiet  # nothing in the silent and noisy stretches
    assert len(right) / len(found) >= 0.9  # a word said as another (an _unknown_ one as a keyword) is rare
    assert r["realtime"] > 1


@pytest.mark.slow
def test_noise_alone_gives_no_detection(spotter):
    from speechcls.infer.listen import listen, posteriors
    from speechcls.infer.scorers import open_scorer

    base, _, noise_dir, _ = spotter
    files = sorted(noise_dir.glob("*.wav"))
    assert len(files) == 3
    for r in listen(base / "run", files, ListenConfig(), device="cpu"):
        assert r["seconds"] == 30 and r["detections"] == [], r
    scorer = open_scorer(base / "run", "cpu")
    words = [scorer.classes.index(w) for w in KEYWORDS]
    for f in files:  # the smoothed probability of every keyword stays under the threshold all along
        _, probs = posteriors(sf.read(f, dtype="float32")[0], scorer, 1_600)
        peak = smooth(probs, 5)[:, words].max()
        print(f"{f.name}: highest smoothed keyword probability {peak:.3f}")
        assert peak < DEFAULT_THRESHOLD  # the threshold where no operating point was measured


@pytest.mark.slow
def test_the_exported_spotter_listens_as_the_run_does(spotter):
    from speechcls.infer.export import export
    from speechcls.infer.listen import listen

    base, src, _, noises = spotter
    _recording(src, noises, base / "long2.wav")
    onnx_file = export(base / "run", "onnx")["path"]
    t0 = time.perf_counter()
    by_onnx = listen(onnx_file, [base / "long2.wav"], device="cpu")[0]
    print(f"onnxruntime: {by_onnx['realtime']:.1f} s of audio per second ({time.perf_counter() - t0:.1f} s)")
    by_torch = listen(base / "run", [base / "long2.wav"], device="cpu")[0]
    assert [(d["word"], d["start"], d["end"]) for d in by_onnx["detections"]] == [
        (d["word"], d["start"], d["end"]) for d in by_torch["detections"]
    ]


@pytest.mark.slow
def test_predict_on_a_kws12_run_says_silence_for_a_silent_clip(spotter, tmp_path):
    """The issue's check: one second of digital silence, and one of quiet noise from the noise files'
    test region (the last 10 %, never trained on), are `_silence_` to the kws12 run's predict."""
    from speechcls.infer.predict import predict

    base, _src, _noise_dir, noises = spotter
    silent, quiet = tmp_path / "silent.wav", tmp_path / "quiet.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR, subtype="PCM_16")
    sf.write(quiet, 0.05 * noises[0][-SR:], SR, subtype="PCM_16")
    for entry in predict(base / "run", [silent, quiet], top=1, device="cpu"):
        assert entry["top"][0]["label"] == config.SILENCE, entry
