"""Training throughput: the seed CNN's train step fed (a) by tensors already on the device, (b) by our
loader from the cache, (c) by the peer's on-the-fly DataLoader. Input overhead = 1 - b/a.

    python benchmarks/train_step.py [--root TREE] [--variants mel,spectrogram] [--steps 5] [--quick]
    python benchmarks/train_step.py --augment --variants none [--models seed_cnn,bcresnet-8] [--speed 0.1] [--quick]

For each variant a store is featurized (not timed) into a temporary folder; every way runs the same
`train_step` (Adam, cross-entropy; fp32 unless --precision) for --steps steps, after one warm-up run,
median of --repeats. On CUDA add --precision bf16, --channels-last, --compile to measure those.

--augment adds, per model, the cost of augmentation on the device (speechcls/audio/pipeline.py) from a
(B, 16000) waveform batch already there: the step on ready log-mel features, the step behind the
pipeline without augmentation (log-mel per batch), and behind the pipeline with BC-ResNet's recipe
(shift 100 ms, noise 0.8 x [0, 0.1] from six 60 s recordings, 2 + 2 SpecAugment masks), each new step a
new batch position, so new draws. Augmentation share = 1 - (features step) / (augmented step): the
issue's goal is at most 10 % on CUDA. The pipeline alone, with and without augmentation, is timed too;
--speed S adds both with the recipe plus speed perturbation (in no published recipe: rows of its own).
Log-mel 40 where the model takes it (BC-ResNet's input), else 128 (the seed CNN needs 78 bins). The
waveforms and noise are synthetic: every operation timed here costs the same whatever the samples are.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize import bench_tree  # noqa: E402

from common import machine, md_table, peer_workers, timed, write_results  # noqa: E402


def cycle(loader, steps: int):
    """`steps` batches from a loader, epoch after epoch."""
    done, epoch = 0, 0
    while done < steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            yield batch
            done += 1
            if done >= steps:
                return
        epoch += 1


def prepare(model, args, device):
    """The model as every way trains it: (model in training mode, the model the steps call (compiled with
    --compile), Adam at 1e-4, the fp16 grad scaler or a disabled one)."""
    import torch

    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    model.train()
    return model, step_model, opt, scaler


def augment_rows(args, device, cfg, warmup: int) -> list[dict]:
    """Per model: the train step on ready features, behind the pipeline without augmentation, and behind
    it with augmentation; then the pipeline alone both ways (see the module docstring)."""
    import torch

    from speechcls.audio.augment import AugmentConfig
    from speechcls.audio.features import FeatureExtractor
    from speechcls.audio.frontend import InputSpec, feature_stats
    from speechcls.audio.pipeline import Pipeline
    from speechcls.config import FeatureParams
    from speechcls.engine.steps import train_step
    from speechcls.models import build_model

    # BC-ResNet's training recipe (its utils.Preprocess), which is TensorFlow's plus SpecAugment
    recipe = AugmentConfig(
        shift_ms=100, noise_prob=0.8, noise_volume=0.1, freq_masks=2, freq_width=7, time_masks=2, time_width=20
    )
    g = torch.Generator().manual_seed(0)
    wave = ((torch.rand(args.batch_size, 16_000, generator=g) * 2 - 1) * 0.3).to(device)  # (B, L)
    labels = torch.randint(0, 12, (args.batch_size,), generator=g).to(device)
    noise = [torch.rand(60 * 16_000, generator=g) * 2 - 1 for _ in range(6)]  # like _background_noise_'s six
    rows: list[dict] = []
    for name in args.models.split(","):
        model = n_mels = None
        for n_mels in (40, 128):
            try:
                torch.manual_seed(0)
                model = build_model(name, (1, n_mels, 101), 12).to(device)
                break
            except ValueError as e:
                why = e
        if model is None:
            print(f"skipping model {name!r}: {why}", flush=True)
            continue
        extractor = FeatureExtractor(FeatureParams("mel", n_mels=n_mels))
        logmel = Pipeline(extractor, InputSpec(log=True)).to(device)
        mean, std = feature_stats([logmel(wave, 0, 0)])
        spec = InputSpec(log=True, mean=tuple(map(tuple, mean)), std=tuple(map(tuple, std)))
        plain = Pipeline(extractor, spec).to(device)
        augmented = Pipeline(extractor, spec, recipe, noise, seed=0).to(device)
        model, step_model, opt, scaler = prepare(model, args, device)
        ready = plain(wave, 0, 0)
        position = iter(range(0, 1 << 62, args.batch_size))  # each step a new batch: new draws

        def steps(inputs):
            for _ in range(args.steps):
                loss, _ = train_step(step_model, opt, None, scaler, cfg, device, inputs(), labels)
            loss.item()  # note: a sync point, once per measurement

        def alone(pipeline):
            for _ in range(args.steps):
                x = pipeline(wave, 0, next(position))
            x.sum().item()

        ways = {
            "step on ready log-mel": lambda: steps(lambda: ready),
            "pipeline (log-mel) + step": lambda: steps(lambda: plain(wave, 0, next(position))),
            "pipeline (augment + log-mel) + step": lambda: steps(lambda: augmented(wave, 0, next(position))),
            "pipeline alone (log-mel)": lambda: alone(plain),
            "pipeline alone (augment + log-mel)": lambda: alone(augmented),
        }
        if args.speed:  # --speed on top of the recipe: not in any published one, so its own rows
            faster = Pipeline(extractor, spec, replace(recipe, speed=args.speed), noise, seed=0).to(device)
            ways[f"pipeline (augment + speed {args.speed:g} + log-mel) + step"] = lambda: steps(
                lambda: faster(wave, 0, next(position))
            )
            ways[f"pipeline alone (augment + speed {args.speed:g} + log-mel)"] = lambda: alone(faster)
        times = {way: timed(fn, args.repeats, warmup, str(device)) for way, fn in ways.items()}
        t = {way: tm["median_s"] for way, tm in times.items()}
        base = t["step on ready log-mel"]
        for way, tm in times.items():
            row = {"variant": f"waveform -> log-mel {n_mels}", "model": name, "way": way,
                   "samples_per_s": args.steps * args.batch_size / tm["median_s"], "median_s": tm["median_s"],
                   "min_s": tm["min_s"], "max_s": tm["max_s"], "ms_per_batch": 1e3 * tm["median_s"] / args.steps,
                   "device": str(device), "precision": args.precision, "channels_last": args.channels_last,
                   "compile": args.compile, "batch_size": args.batch_size, "steps": args.steps}  # fmt: skip
            if "step" in way:
                row["input_overhead_pct"] = 100 * (1 - base / tm["median_s"])
            if way.startswith("pipeline (augment") and way.endswith(" + step"):
                row["augment_share_pct"] = 100 * (1 - t["pipeline (log-mel) + step"] / tm["median_s"])
            rows.append(row)
            print(f"{name:11s} {way:36s} {row['ms_per_batch']:8.2f} ms/batch"
                  + (f"  augmentation {row['augment_share_pct']:5.1f} % of the step" if "augment_share_pct" in row
                     else ""), flush=True)  # fmt: skip
        aug_ms = 1e3 * (t["pipeline alone (augment + log-mel)"] - t["pipeline alone (log-mel)"]) / args.steps
        print(f"{name:11s} augmentation alone: {aug_ms:.2f} ms per batch of {args.batch_size}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--voices", type=int, default=40, help="synthetic voices (x 30 words) without --root")
    ap.add_argument("--variants", default="spectrogram,mel,complex,waveform", help="none: no store")
    ap.add_argument("--augment", action="store_true", help="also time the augmentation pipeline per model")
    ap.add_argument("--models", default="seed_cnn,bcresnet-8", help="with --augment; those not registered are skipped")
    ap.add_argument("--speed", type=float, default=0.0, help="with --augment: also time the recipe plus --speed")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--loader", default="auto", help="our loader's mode: auto | device | host | stream")
    ap.add_argument("--peer-workers", default=None, help="e.g. 0,2 [default: 0 and the core count]")
    ap.add_argument("--quick", action="store_true", help="2 steps of 16, one repeat, no warm-up (tests)")
    ap.add_argument("--out", type=Path, default=None, help="[default: benchmarks/results, with --quick results/quick]")
    args = ap.parse_args()
    import torch

    from speechcls.config import FeatureParams, TrainConfig
    from speechcls.engine.steps import train_step
    from speechcls.featurize import featurize
    from speechcls.loader import FeatureLoader
    from speechcls.models import build_model
    from speechcls.runtime import resolve_device

    from peer import peer_loader

    if args.quick:
        args.steps, args.batch_size, args.repeats = 2, 16, 1
    warmup = 0 if args.quick else 1
    device = torch.device(resolve_device(args.device))
    variants = [] if args.variants in ("", "none") else args.variants.split(",")
    root = bench_tree(args.root, args.voices) if variants else None
    workers = peer_workers(args.peer_workers, args.quick)
    cfg = TrainConfig(
        device=str(device),
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        batch_size=args.batch_size,
    )
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-train-bench-"))
    try:
        for variant in variants:
            print(f"featurizing {variant} (on {device}) ...", flush=True)
            store = featurize(FeatureParams(variant), root, out=tmp / f"{variant}.zarr", device=str(device)).store
            ours = FeatureLoader(store, "train", batch_size=args.batch_size, device=str(device), mode=args.loader,
                                 features="spectrogram" if variant == "waveform" else "")  # fmt: skip
            torch.manual_seed(0)
            model = build_model(cfg.model, ours.item_shape, len(ours.classes)).to(device)
            model, step_model, opt, scaler = prepare(model, args, device)

            def run(batches):
                for x, y in batches:
                    loss, _ = train_step(
                        step_model,
                        opt,
                        None,
                        scaler,
                        cfg,
                        device,
                        x.to(device, non_blocking=True),
                        y.to(device, non_blocking=True),
                    )
                loss.item()  # note: a sync point, once per measurement

            x0, y0 = next(iter(ours))
            ways = {
                "device tensors": lambda: run((x0, y0) for _ in range(args.steps)),
                f"speechcls loader ({ours.mode})": lambda: run(cycle(ours, args.steps)),
            }
            peer_variant = "spectrogram" if variant == "waveform" else variant  # what the model sees
            for w in workers:

                def peer(w=w):
                    run(
                        cycle(
                            peer_loader(root, FeatureParams(peer_variant), batch_size=args.batch_size, num_workers=w),
                            args.steps,
                        )
                    )

                ways[f"peer, num_workers={w}"] = peer
            base = None
            for way, fn in ways.items():
                tm = timed(fn, args.repeats, warmup, str(device))
                rate = args.steps * args.batch_size / tm["median_s"]
                base = base or rate
                row = {"variant": variant, "way": way, "samples_per_s": rate, "median_s": tm["median_s"],
                       "min_s": tm["min_s"], "max_s": tm["max_s"], "input_overhead_pct": 100 * (1 - rate / base),
                       "device": str(device), "precision": args.precision, "channels_last": args.channels_last,
                       "compile": args.compile, "batch_size": args.batch_size, "steps": args.steps}  # fmt: skip
                rows.append(row)
                print(
                    f"{variant:11s} {way:28s} {rate:8.1f} samples/s  overhead {row['input_overhead_pct']:5.1f} %",
                    flush=True,
                )
        if args.augment:
            rows += augment_rows(args, device, cfg, warmup)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"data": str(root) if root else "synthetic waveforms"}
    md = md_table(
        rows,
        [
            "variant",
            "model",
            "way",
            "samples_per_s",
            "input_overhead_pct",
            "augment_share_pct",
            "ms_per_batch",
            "median_s",
            "min_s",
            "max_s",
            "device",
            "precision",
            "batch_size",
            "steps",
        ],
    )
    name = (
        "train_step"
        + ("" if args.precision == "fp32" else f"-{args.precision}")
        + ("-cl" if args.channels_last else "")
        + ("-compile" if args.compile else "")
        + ("-augment" if args.augment else "")
    )
    stem = write_results(name, info, rows, md, args.out, repeats=args.repeats, quick=args.quick)
    print(md)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
