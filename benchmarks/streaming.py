"""Real-time factor of `speechcls stream eval`'s scoring, the two ways side by side: every window through the
model's front end ("windows") and the recording's frames computed once, the model slid over them ("frames",
speechcls/infer/stream_frames.py), for the seed CNN and MatchboxNet-3x1x64, through torch and ONNX Runtime.

    python benchmarks/streaming.py [--models seed,matchboxnet-3x1x64] [--minutes 10] [--repeats 3] [--threads 0]
                                   [--device cpu] [--quick] [--out DIR]

Random weights (speed does not depend on training), on the input each is trained on here (deploy.py's
fake_checkpoint: the seed CNN on the chapter's 128-bin mel, MatchboxNet on 40 log-mel bins standardized).
The audio: --minutes of noise with bursts, 16 kHz. Timed: listen.posteriors (windows every 100 ms, batches of
64), what stream eval and listen run before their decisions; median of --repeats after one warm-up. Printed
and written: hours of audio per second of compute (and its inverse as the real-time factor "x real time"),
the frames way's speed-up over the windows way in the same run, and the largest difference of their
posteriors (the parity the tests hold).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import fake_checkpoint  # noqa: E402

from common import machine, md_table, timed, write_results  # noqa: E402


def noise_with_bursts(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.01 * rng.standard_normal(int(seconds * 16_000))
    for at in rng.uniform(0, seconds - 1, size=int(seconds / 3)):
        a = int(at * 16_000)
        x[a : a + 8_000] += 0.3 * np.sin(np.arange(8_000) * rng.uniform(0.02, 0.3)) * np.hanning(8_000)
    return x.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="seed,matchboxnet-3x1x64")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="1 minute, 1 repeat: a smoke run (results/quick/)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.repeats = 1.0, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    from speechcls.infer.export import export
    from speechcls.infer.listen import posteriors
    from speechcls.infer.scorers import OnnxScorer, TorchScorer

    audio = noise_with_bursts(args.minutes * 60)
    seconds = len(audio) / 16_000
    info = machine() | {"device": args.device, "audio_minutes": args.minutes}
    rows = []
    with tempfile.TemporaryDirectory(prefix="speechcls-bench-streaming-") as tmp:
        for model in args.models.split(","):
            ckpt = fake_checkpoint(model, Path(tmp))
            onnx_file = Path(export(ckpt, "onnx", Path(tmp) / f"{model}.onnx")["path"])
            scorers = {
                "torch": TorchScorer(ckpt, args.device),
                "onnx": OnnxScorer(onnx_file, args.threads or torch.get_num_threads(), args.device),
            }
            for runtime, scorer in scorers.items():
                got, probs = {}, {}
                for way in ("windows", "frames"):
                    got[way] = timed(
                        lambda: probs.__setitem__(way, posteriors(audio, scorer, 1_600, 64, way)[1]),
                        repeats=args.repeats,
                        warmup=1,
                        device=args.device,
                    )
                diff = float(np.abs(probs["frames"] - probs["windows"]).max())
                row = {"model": model, "runtime": runtime}
                for way in ("windows", "frames"):
                    s = got[way]["median_s"]
                    row[f"{way}_x_realtime"] = seconds / s
                    row[f"{way}_hours_per_s"] = seconds / 3600 / s
                    row[f"{way}_median_s"] = s
                row["speedup"] = got["windows"]["median_s"] / got["frames"]["median_s"]
                row["max_abs_diff"] = diff
                rows.append(row)
                print(
                    f"{model:>20} {runtime:>5}: windows {row['windows_x_realtime']:8.0f}x real time "
                    f"({row['windows_hours_per_s']:.3f} h/s), frames {row['frames_x_realtime']:8.0f}x "
                    f"({row['frames_hours_per_s']:.3f} h/s): {row['speedup']:.2f}x; posteriors differ by {diff:.1e}",
                    flush=True,
                )
    columns = [
        "model", "runtime", "windows_x_realtime", "frames_x_realtime", "windows_hours_per_s", "frames_hours_per_s",
        "speedup", "max_abs_diff",
    ]  # fmt: skip
    text = (
        f"Scoring {args.minutes:g} minutes of audio (windows every 100 ms, batches of 64), {args.device}, "
        f"{torch.get_num_threads()} torch threads; x real time = seconds of audio per second of compute.\n\n"
        + md_table(rows, columns)
    )
    stem = write_results("streaming", info, rows, text, args.out, repeats=args.repeats, quick=args.quick)
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
