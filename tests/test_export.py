"""Export (issue 16): a run's model as one ONNX or TorchScript file, with its front end (waveform in,
probabilities out) or without (stored features in), and predict applying the run's input transform.

Every reference is computed here from torchaudio's transforms on clips decoded with soundfile
(helpers.reference), the run's log and standardization written out with torch ops, and the checkpoint's
model: never from the exported file or from speechcls's own inference modules. Checkpoints come from the
real trainer (a log + standardized seed CNN on the small store) and, for the model and variant
combinations that need a store of their own, from `build_model` + `checkpoint.save` in the trainer's
layout (engine/setup.py's Setup.meta()) with a non-identity input transform computed on the clips."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speechcls import config
from speechcls.audio.frontend import LOG_EPS, InputSpec, feature_stats
from speechcls.cli import app
from speechcls.config import FeatureParams, TrainConfig
from speechcls.engine import checkpoint
from speechcls.engine.checkpoint import load_model
from speechcls.models import build_model, names

from helpers import reference

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values")
pytest.importorskip("onnxscript")

runner = CliRunner()
TOL = 1e-4  # the bar for probabilities; seen: <= 1e-6 (ONNX Runtime), 0 (TorchScript)
KWS12 = [config.SILENCE, config.UNKNOWN, *config.KWS12_WORDS]


# --- references --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(mini_root) -> tuple[Path, list[str], np.ndarray]:
    """Every 12th of the 300 real clips (25, short ones among them) and their padded waveforms."""
    rels = sorted(str(p.relative_to(mini_root)) for p in mini_root.glob("*/*.wav"))[::12]
    waves = []
    for rel in rels:
        audio, rate = sf.read(mini_root / rel, dtype="float32")
        assert rate == 16_000
        waves.append(np.pad(audio[:16_000], (0, max(0, 16_000 - len(audio)))))
    return mini_root, rels, np.stack(waves)


def torchaudio_features(root: Path, rels: list[str], params: FeatureParams) -> torch.Tensor:
    return torch.from_numpy(np.stack([reference(root, rel, params) for rel in rels]))  # (N, C, F, T)


def model_input(features: torch.Tensor, spec: dict) -> torch.Tensor:
    """The run's input transform written out: log(x + eps), then (x - mean) / std per (channel, bin), then
    each example's mean over the frames subtracted (cmn)."""
    x = torch.log(features + spec["eps"]) if spec["log"] else features
    if spec.get("mean") is not None:
        mean, std = (torch.tensor(spec[k], dtype=torch.float32)[None, :, :, None] for k in ("mean", "std"))
        x = (x - mean) / std
    if spec.get("cmn"):
        x = x - x.mean(dim=3, keepdim=True)
    return x


def reference_probs(ckpt_path: Path, root: Path, rels: list[str]) -> np.ndarray:
    model, ckpt = load_model(ckpt_path, "cpu")
    x = model_input(torchaudio_features(root, rels, FeatureParams(**ckpt["params"])), ckpt["input"])
    with torch.no_grad():
        return torch.softmax(model(x), dim=1).numpy()


def onnx_probs(path: str, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def torchscript_probs(path: str, x: np.ndarray) -> np.ndarray:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, and still what libtorch loads
        return torch.jit.load(path)(torch.from_numpy(x)).numpy()


# --- checkpoints ---------------------------------------------------------------------------------------
def fake_run(tmp: Path, name: str, params: FeatureParams, root: Path, rels: list[str]) -> Path:
    """A kws12 checkpoint of model `name` in the trainer's layout, with a log (power variants) +
    standardization input transform taken from the clips, random BatchNorm statistics and a last layer
    scaled so that the probabilities are far from uniform (a parity test on flat outputs proves little)."""
    from speechcls.engine.setup import model_settings

    log = params.variant != "complex"
    cfg = TrainConfig(model=name, task="kws12", log=log, normalize=True)
    torch.manual_seed(0)
    model = build_model(name, params.shape, len(KWS12), **model_settings(cfg)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        feats = torchaudio_features(root, rels, params)
        mean, std = feature_stats([torch.log(feats + LOG_EPS) if log else feats])
        spec = InputSpec(log, LOG_EPS, mean, std)
        last = [
            m for m in model.modules() if getattr(m, "weight", None) is not None and m.weight.shape[0] == len(KWS12)
        ]
        logits = model(model_input(feats, spec.to_dict()))
        scale = 3.0 / float(logits.std())
        last[-1].weight.mul_(scale)
        if last[-1].bias is not None:
            last[-1].bias.mul_(scale)
    meta = {
        "config": asdict(cfg) | {"store": ""}, "task": "kws12", "classes": KWS12, "params": asdict(params),
        "input": spec.to_dict(), "in_shape": list(params.shape), "n_classes": len(KWS12), "model_name": name,
        "model_cfg": model_settings(cfg), "complexity": {}, "noise": None,
    }  # fmt: skip
    path = tmp / f"{name}-{params.variant}.pt"
    checkpoint.save(path, {**meta, "model": model.state_dict(), "epoch": 1, "valid_loss": 1.0, "valid_acc": 0.5})
    return path


@pytest.fixture(scope="module")
def trained(small_store, tmp_path_factory) -> Path:
    """A run of the real trainer: the seed CNN on log-mel, standardized and mean-normalized per example
    (store: 80 mels x 81 frames)."""
    from speechcls.engine.fit import fit

    run = tmp_path_factory.mktemp("export") / "run"
    cfg = TrainConfig(
        store=str(small_store()), device="cpu", batch_size=16, epochs=1, log=True, normalize=True, cmn=True
    )
    fit(cfg, run)
    return run


def small_params(model: str, variant: str) -> FeatureParams:
    """The input each model is tried on: the chapter's for the seed CNN (it needs 78 bins at least), the
    compact models' 40 mels (their papers') for mel; spectrogram and complex are the chapter's (257 bins)."""
    if variant == "mel":
        return FeatureParams("mel", n_mels=128 if model in ("seed", "seed_cnn") else 40)
    return FeatureParams(variant)


# what runs in the quick suite; every other model x variant is marked slow (the BC-ResNets on 257 bins are
# the heaviest: seconds per clip on this CPU)
QUICK = {("seed", "complex"), ("matchboxnet-3x1x64", "spectrogram")}
# CI (`make test`, ~15 minutes on 2 cores) runs every model on mel and every variant on the seed CNN,
# MatchboxNet and BC-ResNet-1 (the BC-ResNet family shares its code: only the width differs); the BC-ResNets
# 2-8 on 257-bin spectrogram and complex features (a minute or more each there) run with
# SPEECHCLS_FULL_EXPORT=1, as the README says
FULL = os.environ.get("SPEECHCLS_FULL_EXPORT") == "1"
COMBOS = [
    pytest.param(m, v, marks=() if (m, v) in QUICK else pytest.mark.slow, id=f"{m}-{v}")
    for m in names()
    for v in ("spectrogram", "mel", "complex")
    if FULL or v == "mel" or m in ("seed", "matchboxnet-3x1x64", "bcresnet-1")
]


@pytest.fixture(scope="module")
def exported(trained) -> dict[str, dict]:
    """The trained run exported once each way (what export returns)."""
    from speechcls.infer.export import export

    return {
        "onnx": export(trained, "onnx"),
        "features": export(trained, "onnx", frontend=False),
        "torchscript": export(trained, "torchscript"),
        "int8": export(trained, "onnx", quantize="int8"),
    }


# --- the front end -----------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["spectrogram", "mel", "complex"])
def test_the_exported_front_end_equals_torchaudio(variant, clips):
    """ONNX's STFT (what torch.stft exports to) with its reflect padding, window and normalization, the
    mel matmul and the power: within float32 rounding of torchaudio on the real clips."""
    from speechcls.infer.export import frontend_onnx

    root, rels, waves = clips
    params = FeatureParams(variant)
    got = ort.InferenceSession(frontend_onnx(params).SerializeToString()).run(None, {"waveform": waves})[0]
    want = torchaudio_features(root, rels, params).numpy()
    assert got.shape == want.shape == (len(rels), *params.shape)
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"{variant}: largest difference {err:.2e} of the largest value")
    assert err < 1e-5  # seen: 3.1e-7 (spectrogram), 2.6e-7 (mel), 2.3e-7 (complex)


# --- every model, every variant: ONNX and TorchScript against PyTorch ----------------------------------
@pytest.mark.parametrize("model, variant", COMBOS)
def test_exported_probabilities_equal_pytorch(model, variant, clips, tmp_path):
    from speechcls.infer.export import export

    root, rels, waves = clips
    if (model, variant) not in QUICK:  # the BC-ResNets on 257 bins take seconds a clip here: 13 clips of 25
        rels, waves = rels[::2], waves[::2]
    ckpt = fake_run(tmp_path, model, small_params(model, variant), root, rels)
    want = reference_probs(ckpt, root, rels)
    assert want.max(axis=1).mean() > 2 / len(KWS12)  # far from uniform: the comparison can fail
    onnx_file = export(ckpt, "onnx")["path"]
    ts_file = export(ckpt, "torchscript")["path"]
    for name, got in [
        ("onnx", onnx_probs(onnx_file, waves)),
        ("onnx, batch 1", onnx_probs(onnx_file, waves[:1])),
        ("torchscript", torchscript_probs(ts_file, waves)),
        ("torchscript, batch 3", torchscript_probs(ts_file, waves[:3])),
    ]:
        diff = np.abs(got - want[: len(got)]).max()
        print(f"{model} {variant} {name}: largest difference {diff:.1e}")
        assert diff < TOL, name
    feats = torchaudio_features(root, rels, FeatureParams(**checkpoint.load(ckpt)["params"])).numpy()
    without = export(ckpt, "onnx", frontend=False)["path"]
    assert np.abs(onnx_probs(without, feats) - want).max() < TOL


# --- the real trainer's run: log + standardization, predict, int8, metadata -------------------------------
def test_a_trained_run_exports_with_its_input_transform_and_predict_applies_it(trained, exported, clips):
    from speechcls.infer.predict import predict

    root, rels, waves = clips
    ckpt = checkpoint.load(trained / "best.pt")
    spec = ckpt["input"]
    assert spec["log"] and spec["mean"] is not None and spec["cmn"]  # what makes the comparisons below bite
    want = reference_probs(trained / "best.pt", root, rels)
    for fmt, run in (("onnx", onnx_probs), ("torchscript", torchscript_probs)):
        r = exported[fmt]
        assert Path(r["path"]).parent == trained and r["bytes"] == Path(r["path"]).stat().st_size
        assert np.abs(run(r["path"], waves) - want).max() < TOL, fmt
    # predict computes the same probabilities: the run's input transform, as in training
    results = predict(trained, [root / rel for rel in rels], top=len(ckpt["classes"]), device="cpu")
    for r, p in zip(results, want):
        got = np.array([dict((t["label"], t["prob"]) for t in r["top"])[c] for c in ckpt["classes"]])
        assert np.abs(got - p).max() < 1e-5, r["file"]


def test_int8_is_smaller_and_close(exported, clips):
    """Static int8 (QDQ) of the classifier only: the front end stays float (no Q/DQ before the STFT)."""
    import onnx

    root, rels, waves = clips
    fp32, int8 = exported["onnx"], exported["int8"]
    assert int8["path"].endswith("best.int8.onnx") and int8["quantization"] == "int8"
    assert int8["bytes"] < 0.35 * fp32["bytes"]  # int8 weights: about a quarter
    graph = onnx.load(int8["path"]).graph
    ops = [n.op_type for n in graph.node]
    assert "QuantizeLinear" in ops and "STFT" in ops
    front = [n for n in graph.node if n.name.startswith("frontend/")]
    assert front and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in front)
    want = onnx_probs(fp32["path"], waves)
    got = onnx_probs(int8["path"], waves)
    agree = (got.argmax(1) == want.argmax(1)).mean()
    print(f"int8: {int8['bytes']:,} vs {fp32['bytes']:,} bytes; top-1 agrees on {agree:.0%} of {len(rels)} clips, "
          f"largest probability difference {np.abs(got - want).max():.3f}")  # fmt: skip
    assert agree >= 0.75
    assert not os.path.exists(Path(int8["path"]).with_suffix(".onnx.data"))  # one file, no external data


def test_the_file_says_what_it_is(trained, exported):
    import warnings

    from speechcls.infer.export import read_torchscript_metadata
    from speechcls.infer.scorers import read_onnx_metadata

    ckpt = checkpoint.load(trained / "best.pt")
    onnx_file, features_file, ts_file = (exported[k]["path"] for k in ("onnx", "features", "torchscript"))
    for meta in (read_onnx_metadata(onnx_file), read_torchscript_metadata(ts_file)):
        assert json.loads(meta["classes"]) == ckpt["classes"]
        assert json.loads(meta["feature_params"]) == ckpt["params"]
        assert json.loads(meta["input_transform"])["mean"] == [list(row) for row in ckpt["input"]["mean"]]
        assert json.loads(meta["frontend"]) is True and meta["task"] == "words"
        assert json.loads(meta["input"]) == {
            "name": "waveform", "shape": ["batch", 16_000], "dtype": "float32", "range": [-1.0, 1.0],
            "sample_rate": 16_000, "clip_seconds": 1.0,
        }  # fmt: skip
    session = ort.InferenceSession(onnx_file)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("waveform", ["batch", 16_000], "tensor(float)")
    assert (out.name, out.shape) == ("probabilities", ["batch", len(ckpt["classes"])])
    session = ort.InferenceSession(features_file)
    assert session.get_inputs()[0].shape == ["batch", *ckpt["in_shape"]]
    assert json.loads(read_onnx_metadata(features_file)["frontend"]) is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert torch.jit.load(ts_file)(torch.zeros(2, 16_000)).shape == (2, len(ckpt["classes"]))


# The docs' example (docs/deploy.md shows this file), run where torch cannot be imported: the exported file
# needs onnxruntime alone.
ONNX_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "onnx_predict.py"
NO_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['speechcls'] = None; sys.modules['torchaudio'] = None\n"
)


def test_the_exported_file_runs_with_onnxruntime_alone(trained, exported, clips, tmp_path):
    root, rels, _ = clips
    model = exported["onnx"]["path"]
    want = reference_probs(trained / "best.pt", root, rels[:3])
    ckpt = checkpoint.load(trained / "best.pt")
    for rel, p in zip(rels[:3], want):
        code = NO_TORCH + "import importlib.util; assert importlib.util.find_spec('onnxruntime')\n"
        code += f"sys.argv = ['onnx_predict.py', {str(model)!r}, {str(root / rel)!r}]\n"
        code += ONNX_EXAMPLE.read_text()
        code += "assert 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        label, prob = proc.stdout.split()
        assert label == ckpt["classes"][int(p.argmax())] and abs(float(prob) - p.max()) < TOL


# --- the command -------------------------------------------------------------------------------------
def test_export_command(trained, tmp_path):
    out = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(trained), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{out}: onnx, ") and "input waveform (batch, 16000) float32" in r.output
    assert out.is_file() and "-> output probabilities (batch, 10): 10 classes" in r.output
    r = runner.invoke(app, ["export", str(trained / "best.pt"), "-f", "torchscript", "--no-frontend"])
    assert r.exit_code == 0, r.output
    assert (trained / "best.features.torchscript.pt").is_file()
    for args, words in [
        (["--format", "tflite"], "--format 'tflite': choose one of onnx, torchscript"),
        (["-f", "torchscript", "--quantize", "int8"], "use it with --format onnx"),
        (["--quantize", "int4"], "--quantize 'int4': choose int8"),
    ]:
        r = runner.invoke(app, ["export", str(trained), *args])
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and words in lines[0], r.output
    r = runner.invoke(app, ["export", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no such checkpoint" in r.output


@pytest.mark.slow
def test_the_deploy_benchmark_runs(tmp_path):
    """benchmarks/deploy.py --quick on one model: its table and result files (numbers not judged)."""
    cmd = [sys.executable, "benchmarks/deploy.py", "--quick", "--models", "matchboxnet-3x1x64", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(next(tmp_path.glob("deploy-*.json")).read_text())["results"]
    assert result["model"] == "matchboxnet-3x1x64" and result["int8_mb"] > 0 and result["listen_onnx_rtf"] > 0
    assert "| matchboxnet-3x1x64 | 1x40x101 |" in proc.stdout
