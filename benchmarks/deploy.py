"""Size and latency of every model as each exported format, listen's real-time factor, and what int8 costs
in accuracy on held-out test splits.

    python benchmarks/deploy.py [--models seed,bcresnet-8,...|none] [--runs RUN_DIR,...] [--repeats 50]
                                [--audio-s 60] [--quick] [--out DIR]

Per model (random weights: size and speed do not depend on training), on the input it is trained on here
(the seed CNN: the chapter's 128-bin mel; the compact models: 40 log-mel bins, standardized), the end-to-end
file from a one-second waveform to probabilities: its size (the checkpoint's weights, the ONNX file,
int8 ONNX, TorchScript) and the latency of one clip (batch 1) on the CPU with one thread
(torch.set_num_threads(1); onnxruntime intra- and inter-op threads 1): PyTorch eager (featurize's
FeatureExtractor + the run's input transform + the model + softmax, what predict runs), TorchScript, ONNX
Runtime float32 and int8 (calibrated on the features of synthetic clips; speed does not depend on the
calibration). Median of --repeats after warm-up, min and max in the JSON. Then listen's real-time factor
(seconds of audio per second of compute, one thread, 100 ms hop, batches of 64 windows) through torch and
through ONNX Runtime over --audio-s seconds of noise.

Per run of --runs: top-1 accuracy on the run's test split (the stored features through the file exported
without its front end) for float32 and int8 ONNX, and the two file sizes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, write_results  # noqa: E402

QUICK_MODELS = ("seed", "matchboxnet-3x1x64", "bcresnet-1")


def params_for(model: str):
    from speechcls.config import FeatureParams

    return FeatureParams("mel") if model in ("seed", "seed_cnn") else FeatureParams("mel", n_mels=40)


def fake_checkpoint(model: str, folder: Path) -> Path:
    """A kws12 checkpoint of `model` in the trainer's layout with random weights, log + standardization
    for the compact models (statistics of synthetic clips), the chapter's raw mel for the seed CNN."""
    from speechcls import config
    from speechcls.audio.features import FeatureExtractor
    from speechcls.audio.frontend import LOG_EPS, InputSpec, feature_stats
    from speechcls.config import TrainConfig
    from speechcls.engine import checkpoint
    from speechcls.engine.setup import model_settings
    from speechcls.models import build_model

    params = params_for(model)
    log = model not in ("seed", "seed_cnn")
    classes = [config.SILENCE, config.UNKNOWN, *config.KWS12_WORDS]
    cfg = TrainConfig(model=model, task="kws12", log=log, normalize=log)
    torch.manual_seed(0)
    net = build_model(model, params.shape, len(classes), **model_settings(cfg)).eval()
    spec = InputSpec()
    if log:
        with torch.no_grad():
            feats = FeatureExtractor(params)(synthetic_clips(32))
        spec = InputSpec(True, LOG_EPS, *feature_stats([torch.log(feats + LOG_EPS)]))
    meta = {
        "config": asdict(cfg) | {"store": ""}, "task": "kws12", "classes": classes, "params": asdict(params),
        "input": spec.to_dict(), "in_shape": list(params.shape), "n_classes": len(classes), "model_name": model,
        "model_cfg": model_settings(cfg), "complexity": {}, "noise": None,
    }  # fmt: skip
    return checkpoint.save(folder / f"{model}.pt", {**meta, "model": net.state_dict(), "epoch": 1})


def synthetic_clips(n: int, seconds: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(n, 16000 x seconds) float32: noise with a few tone bursts, roughly speech-like in level."""
    g = torch.Generator().manual_seed(seed)
    length = int(16_000 * seconds)
    t = torch.arange(length) / 16_000
    x = 0.02 * torch.randn(n, length, generator=g)
    f0 = 100 + 300 * torch.rand(n, 1, generator=g)
    envelope = (torch.sin(2 * torch.pi * 1.5 * t) > 0.3).float()
    return (x + 0.3 * envelope * torch.sin(2 * torch.pi * f0 * t)).float()


def median_ms(fn, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times)}


def session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def bench_model(model: str, folder: Path, repeats: int, audio_s: float) -> dict:
    import warnings

    from speechcls.infer.export import export
    from speechcls.infer.listen import posteriors
    from speechcls.infer.predict import load_run
    from speechcls.infer.scorers import OnnxScorer, TorchScorer

    ckpt = fake_checkpoint(model, folder)
    run = load_run(ckpt, "cpu")
    e2e = run.end_to_end()
    with torch.no_grad():
        calibration = e2e.features(synthetic_clips(64, seed=1))
    files = {
        "onnx": export(ckpt, "onnx", folder / f"{model}.onnx"),
        "int8": export(ckpt, "onnx", folder / f"{model}.int8.onnx", quantize="int8", calibration_data=calibration),
        "torchscript": export(ckpt, "torchscript", folder / f"{model}.torchscript.pt"),
    }
    clip = synthetic_clips(1, seed=2)
    row = {
        "model": model,
        "input": "x".join(map(str, run.params.shape)),
        "params": sum(p.numel() for p in e2e.parameters()),
    }
    row["checkpoint_mb"] = (
        sum(t.numel() * t.element_size() for t in torch.load(ckpt, weights_only=True)["model"].values()) / 1e6
    )
    for k, r in files.items():
        row[f"{k}_mb"] = r["bytes"] / 1e6
    with torch.no_grad():
        row["torch_ms"] = median_ms(lambda: e2e(clip), repeats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ts = torch.jit.load(files["torchscript"]["path"])
        row["torchscript_ms"] = median_ms(lambda: ts(clip), repeats)
    for k in ("onnx", "int8"):
        s = session(files[k]["path"])
        x = clip.numpy()
        row[f"{k}_ms"] = median_ms(lambda s=s, x=x: s.run(None, {"waveform": x}), repeats)
    audio = synthetic_clips(1, audio_s, seed=3)[0].numpy()
    for name, scorer in (("torch", TorchScorer(ckpt, "cpu")), ("onnx", OnnxScorer(Path(files["onnx"]["path"]), 1))):
        t0 = time.perf_counter()
        posteriors(audio, scorer, 1_600, 64)
        row[f"listen_{name}_rtf"] = audio_s / (time.perf_counter() - t0)
    return row


def int8_accuracy(run_dir: Path, folder: Path) -> dict:
    """Top-1 accuracy on the run's test split: stored features -> float32 and int8 ONNX (no front end)."""
    from speechcls.infer.export import export, split_features
    from speechcls.infer.predict import load_run

    m = load_run(run_dir, "cpu")
    x, y = (t.numpy() for t in split_features(m, "test"))
    row = {"run": str(run_dir), "model": m.ckpt["model_name"], "test_clips": len(y), "classes": len(m.classes)}
    name = run_dir.name
    for k, quantize in (("fp32", None), ("int8", "int8")):
        r = export(run_dir, "onnx", folder / f"{name}.{k}.onnx", frontend=False, quantize=quantize)
        probs = np.concatenate(
            [session(r["path"]).run(None, {"features": x[i : i + 64]})[0] for i in range(0, len(x), 64)]
        )
        row[f"{k}_acc"] = float((probs.argmax(1) == y).mean())
        row[f"{k}_mb"] = r["bytes"] / 1e6
    row["int8_change"] = row["int8_acc"] - row["fp32_acc"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="", help="comma-separated registry names, or none [default: every model]")
    ap.add_argument("--runs", default="", help="comma-separated run folders: int8 accuracy on their test split")
    ap.add_argument("--repeats", type=int, default=50, help="timed clips per latency (median)")
    ap.add_argument("--audio-s", type=float, default=60.0, help="seconds of audio listen's real-time factor runs on")
    ap.add_argument("--quick", action="store_true", help="3 models, 5 repeats, 10 s of audio (a smoke run)")
    ap.add_argument("--out", type=Path, default=None, help="results folder [default: benchmarks/results]")
    args = ap.parse_args()

    from speechcls.models import names

    torch.set_num_threads(1)
    models = [m for m in args.models.split(",") if m] or (list(QUICK_MODELS) if args.quick else names())
    models = [] if models == ["none"] else models
    repeats, audio_s = (5, 10.0) if args.quick else (args.repeats, args.audio_s)
    info = machine() | {"torch_threads": 1, "onnxruntime_threads": 1}
    rows, acc_rows = [], []
    with tempfile.TemporaryDirectory(prefix="speechcls-deploy-") as tmp:
        for model in models:
            print(f"{model}: exporting and timing ...", flush=True)
            r = bench_model(model, Path(tmp), repeats, audio_s)
            print(
                f"  {r['input']}: onnx {r['onnx_mb']:.2f} MB, int8 {r['int8_mb']:.2f} MB; batch 1, one thread: torch "
                f"{r['torch_ms']['median_ms']:.2f} ms, torchscript {r['torchscript_ms']['median_ms']:.2f} ms, onnx "
                f"{r['onnx_ms']['median_ms']:.2f} ms, int8 {r['int8_ms']['median_ms']:.2f} ms; listen "
                f"{r['listen_torch_rtf']:.0f}x (torch) {r['listen_onnx_rtf']:.0f}x (onnx) real time",
                flush=True,
            )
            rows.append(r)
        for run in [Path(p) for p in args.runs.split(",") if p]:
            print(f"{run}: int8 accuracy on its test split ...", flush=True)
            a = int8_accuracy(run, Path(tmp))
            print(f"  fp32 {a['fp32_acc']:.4f}, int8 {a['int8_acc']:.4f} ({a['int8_change']:+.4f})", flush=True)
            acc_rows.append(a)
    flat = [
        {k: (v["median_ms"] if isinstance(v, dict) else v) for k, v in r.items()} for r in rows
    ]  # the table shows medians; the JSON keeps min and max
    md = "Size (MB) and latency of one clip (ms, batch 1, one CPU thread, waveform in, probabilities out):\n\n"
    columns = ["model", "input", "params", "checkpoint_mb", "onnx_mb", "int8_mb", "torchscript_mb", "torch_ms"]
    columns += ["torchscript_ms", "onnx_ms", "int8_ms", "listen_torch_rtf", "listen_onnx_rtf"]
    md += md_table(flat, columns)
    if acc_rows:
        md += "\n\nint8 on held-out test splits (top-1 accuracy):\n\n"
        columns = ["run", "model", "test_clips", "classes", "fp32_acc", "int8_acc", "int8_change", "fp32_mb", "int8_mb"]
        md += md_table(acc_rows, columns)
    stem = write_results("deploy", info, rows + acc_rows, md, args.out, repeats=repeats, quick=args.quick)
    print(md)
    print(f"results: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
