"""Clip length (issue 25): featurize --clip-seconds S pads or truncates every clip to S x 16,000 samples and
the store keeps it; the loader, its silence examples, the augmentation, the model, predict, evaluate and
export all follow the store. One-second stores are unchanged (the same key, the same bytes)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from typer.testing import CliRunner

from speechcls import config
from speechcls.cli import app
from speechcls.config import FeatureParams
from speechcls.featurize import featurize

from helpers import read_store, reference, write_wav

DIGITS = "zero one two three four five six seven eight nine".split()
# the two longest FSDD clips (2.20 s, 2.28 s: truncated at 0.8 s), the shortest (0.14 s: padded), and more
EDGES = ("9_theo_16.wav", "7_theo_36.wav", "6_yweweler_3.wav", "3_lucas_7.wav")


def fsdd_manifest(fsdd_root, folder, per_digit: int = 4, speakers=("george", "jackson", "lucas", "theo", "yweweler")):
    """A CSV manifest of FSDD clips (8 kHz, 0.14-2.28 s) beside a link to the folder: theo is the test
    speaker, yweweler the validation one."""
    (folder / "fsdd").symlink_to(fsdd_root)
    names = sorted(
        p.name
        for p in fsdd_root.glob("*.wav")
        if p.stem.split("_")[1] in speakers and (int(p.stem.split("_")[2]) < per_digit or p.name in EDGES)
    )
    lines = ["path,label,speaker,split"]
    for name in names:
        digit, speaker, _ = name[:-4].split("_")
        split = {"theo": "test", "yweweler": "validation"}.get(speaker, "train")
        lines.append(f"fsdd/{name},{DIGITS[int(digit)]},{speaker},{split}")
    (folder / "fsdd.csv").write_text("\n".join(lines) + "\n")
    return folder / "fsdd.csv"


def noise_folder(folder):
    """Two 10-second recordings of seeded noise at 16 kHz (validation and test cut 1 s each from them)."""
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        write_wav(folder / name, np.clip(0.2 * rng.standard_normal(160000), -1, 1).astype(np.float32), 16000, "FLOAT")
    return folder


def test_default_stores_are_unchanged():
    # the key of today's one-second stores names their default location: it must not move
    assert config.clip_samples(config.CLIP_SECONDS) == config.CLIP_SAMPLES == FeatureParams().clip_samples
    assert [FeatureParams(v).key() for v in ("spectrogram", "waveform", "mel")] == ["2448a712", "49d01b90", "4d9160a2"]
    assert config.clip_samples(0.8) == 12800 and config.clip_samples(1.5) == 24000
    for bad in (0, -1.0, float("nan"), float("inf"), 601):
        with pytest.raises(ValueError, match="--clip-seconds must be a finite number"):
            config.clip_samples(bad)


@pytest.mark.parametrize("variant", ["waveform", "mel"])
def test_stored_rows_are_the_clips_cut_to_the_length(fsdd_root, tmp_path, variant):
    manifest = fsdd_manifest(fsdd_root, tmp_path)
    extra = {"n_mels": 40} if variant == "mel" else {}
    params = FeatureParams(variant, clip_samples=config.clip_samples(0.8), **extra)
    s = read_store(featurize(params, manifest=manifest, out=tmp_path / "s.zarr", backend="torch", device="cpu").store)
    assert s["attrs"]["clip_samples"] == 12800 and s["attrs"]["params"]["clip_samples"] == 12800
    assert s["features"].shape[1:] == ((1, 12800) if variant == "waveform" else (1, 40, 81))
    for rel in [f"fsdd/{e}" for e in EDGES]:
        row = list(s["path"]).index(rel)
        want = reference(tmp_path, rel, params)  # soundfile, torchaudio's resample, pad/truncate, transform
        if variant == "waveform":
            assert np.array_equal(s["features"][row], want)
        else:
            np.testing.assert_allclose(s["features"][row], want, rtol=1e-4, atol=1e-6)


def test_loader_silence_augmentation_and_model_follow_the_store(fsdd_root, tmp_path):
    from speechcls.audio.augment import AugmentConfig
    from speechcls.audio.features import FeatureExtractor
    from speechcls.audio.frontend import InputSpec
    from speechcls.audio.pipeline import Pipeline
    from speechcls.data.noise import load_noise
    from speechcls.loader import FeatureLoader
    from speechcls.models import build_model

    manifest = fsdd_manifest(fsdd_root, tmp_path)
    params = FeatureParams("waveform", clip_samples=config.clip_samples(0.8))
    store = featurize(params, manifest=manifest, out=tmp_path / "w.zarr", backend="torch", device="cpu").store
    noise = noise_folder(tmp_path / "noise")
    loader = FeatureLoader(
        store, "train", task="keywords", keywords=("zero", "one"), noise_dir=str(noise), batch_size=8, features="mel"
    )
    # train: george, jackson, lucas x 4 clips x 2 digits = 24 keyword clips -> ceil(2.4) silence examples
    assert loader.silence.shape == (loader.n_silence, 1, 12800) and loader.n_silence == 3
    assert loader.item_shape == (1, 128, 81)
    mel = FeatureParams("mel", n_mels=40, clip_samples=12800)
    recordings = [torch.from_numpy(r) for r in load_noise(noise, 16000, 12800)]
    aug = AugmentConfig(shift_ms=100.0, noise_prob=1.0, noise_volume=0.1, time_masks=2, time_width=20)
    loader.pipeline = Pipeline(FeatureExtractor(mel), InputSpec(log=True), aug, recordings, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (8, 1, 40, 81) and torch.isfinite(x).all()
    for name in ("seed", "matchboxnet-3x1x64", "bcresnet-1"):
        model = build_model(name, (1, 40, 81) if name != "seed" else (1, 80, 81), 4).eval()
        shape = (2, 1, 40, 81) if name != "seed" else (2, 1, 80, 81)
        assert model(torch.zeros(shape)).shape == (2, 4)


@pytest.mark.slow
def test_fsdd_manifest_keywords_at_0_8_s_train_evaluate_predict_export(fsdd_root, tmp_path):
    """The issue's "done when": FSDD as a CSV manifest, --clip-seconds 0.8, --keywords zero,one,two with a
    noise folder: classes _silence_, _unknown_, zero, one, two; the export takes 12,800 samples."""
    import onnxruntime as ort

    from speechcls.infer.predict import load_run, predict

    manifest = fsdd_manifest(fsdd_root, tmp_path)
    store, run = tmp_path / "fsdd-0.8.zarr", tmp_path / "run"
    cli = CliRunner()
    r = cli.invoke(
        app,
        [
            "featurize",
            "--manifest",
            str(manifest),
            "--clip-seconds",
            "0.8",
            "--variant",
            "waveform",
            "--out",
            str(store),
        ],
    )
    assert r.exit_code == 0, r.output
    r = cli.invoke(
        app,
        ["train", "--store", str(store), "--keywords", "zero,one,two", "--noise-dir", str(noise_folder(tmp_path / "n")),
         "--recipe", "kws", "--model", "matchboxnet-3x1x64", "--epochs", "1", "--batch-size", "16", "--out", str(run),
         "--device", "cpu"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["_silence_", "_unknown_", "zero", "one", "two"]
    assert json.loads((run / "config.json").read_text())["keywords"] == ["zero", "one", "two"]
    m = load_run(run)
    assert m.params.clip_samples == 12800 and m.task == "keywords"
    r = cli.invoke(app, ["evaluate", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    # predict pads / truncates to the run's 0.8 s: the 2.28 s clip gives what its first 12,800 samples give
    long = tmp_path / "fsdd" / "9_theo_16.wav"
    got = predict(run, [long], top=5, device="cpu")[0]["top"]
    audio, rate = sf.read(long, dtype="float32")
    want = torchaudio.functional.resample(torch.from_numpy(audio), rate, 16000)[:12800].numpy()
    assert rate == 8000 and len(want) == 12800
    with torch.no_grad():
        probs = m.end_to_end()(torch.from_numpy(want.astype(np.float32))[None])[0]
    assert len(got) == 5
    for t in got:
        assert t["prob"] == pytest.approx(float(probs[m.classes.index(t["label"])]), abs=1e-5)
    r = cli.invoke(app, ["export", str(run)])
    assert r.exit_code == 0, r.output
    session = ort.InferenceSession(str(run / "best.onnx"))
    assert session.get_inputs()[0].shape == ["batch", 12800]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["input"])["clip_seconds"] == 0.8 and json.loads(meta["classes"])[2:] == [
        "zero",
        "one",
        "two",
    ]
    onnx_probs = session.run(None, {"waveform": want.astype(np.float32)[None]})[0][0]
    np.testing.assert_allclose(onnx_probs, probs.numpy(), atol=1e-4)
