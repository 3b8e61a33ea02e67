"""Training throughput: the seed CNN's train step fed (a) by tensors already on the device, (b) by our
loader from the cache, (c) by the peer's on-the-fly DataLoader. Input overhead = 1 - b/a.

    python benchmarks/train_step.py [--root TREE] [--variants mel,spectrogram] [--steps 5] [--quick]

For each variant a store is featurized (not timed) into a temporary folder; every way runs the same
`train_step` (Adam, cross-entropy; fp32 unless --precision) for --steps steps, after one warm-up run,
median of --repeats. On CUDA add --precision bf16, --channels-last, --compile to measure those.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--voices", type=int, default=40, help="synthetic voices (x 30 words) without --root")
    ap.add_argument("--variants", default="spectrogram,mel,complex,waveform")
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
    root = bench_tree(args.root, args.voices)
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
        for variant in args.variants.split(","):
            print(f"featurizing {variant} (on {device}) ...", flush=True)
            store = featurize(FeatureParams(variant), root, out=tmp / f"{variant}.zarr", device=str(device)).store
            ours = FeatureLoader(store, "train", batch_size=args.batch_size, device=str(device), mode=args.loader,
                                 features="spectrogram" if variant == "waveform" else "")  # fmt: skip
            torch.manual_seed(0)
            model = build_model(cfg.model, ours.item_shape, len(ours.classes)).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            step_model = torch.compile(model) if args.compile else model
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
            model.train()

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
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"data": str(root)}
    md = md_table(
        rows,
        [
            "variant",
            "way",
            "samples_per_s",
            "input_overhead_pct",
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
    )
    stem = write_results(name, info, rows, md, args.out, repeats=args.repeats, quick=args.quick)
    print(md)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
