"""Input pipeline: samples/s and GB/s delivering a full epoch of training batches onto the training
device, the peer's on-the-fly DataLoader against our loader in each mode (device-resident,
host-resident, streaming) and against the waveform cache with the features computed on the device.

    python benchmarks/input_pipeline.py [--root TREE] [--variants spectrogram,mel,complex] [--quick]

No model runs: this is the rate at which each way can feed one. Stores are featurized (not timed)
into a temporary folder. Median of --repeats full epochs after a warm-up epoch.
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


def drain(loader, device) -> int:
    """One epoch onto the device; returns the bytes of x delivered."""
    nbytes = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        nbytes += x.numel() * x.element_size()
    return nbytes


def unchecked_store(featurize, params, root, out, dev):
    """The same store written without the crc32c codec (format 4 otherwise): what reading costs without
    checksums. Only for this measurement; speechcls never writes such a store."""
    from unittest import mock

    with (
        mock.patch("speechcls.store.writer.checksummed", lambda codecs: list(codecs)),
        mock.patch("speechcls.store.writer.record_codecs", lambda: [__import__("zarr").codecs.ZstdCodec()]),
    ):
        return featurize(params, root, out=out, device=dev).store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--voices", type=int, default=134, help="synthetic voices (x 30 words) without --root")
    ap.add_argument("--variants", default="spectrogram,mel,complex")
    ap.add_argument("--dtypes", default="float32", help="stored dtypes to measure, e.g. float32,float16")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--modes", default="device,host,stream")
    ap.add_argument("--peer-workers", default=None, help="e.g. 0,2 [default: 0 and the core count]")
    ap.add_argument("--quick", action="store_true", help="one epoch each, no warm-up, peer workers 0 (tests)")
    ap.add_argument("--out", type=Path, default=None, help="[default: benchmarks/results, with --quick results/quick]")
    ap.add_argument(
        "--checksum-cost",
        action="store_true",
        help="also stream the same float32 store written without the crc32c codec: the price of the checksums",
    )
    args = ap.parse_args()
    from speechcls.config import FeatureParams
    from speechcls.data.tree import index_tree
    from speechcls.featurize import featurize
    from speechcls.loader import FeatureLoader
    from speechcls.runtime import resolve_device
    from speechcls.store import open_store
    from speechcls.store.reader import split_rows

    from peer import peer_loader

    device = resolve_device(args.device)
    dev = str(device)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    root = bench_tree(args.root, args.voices)
    index = index_tree(root)
    train_idx = [i for i, c in enumerate(index.split("official")) if c == 0]
    workers = peer_workers(args.peer_workers, args.quick)
    modes = args.modes.split(",")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-input-bench-"))

    def measure(variant, dtype, way, make, n):
        loader = make()
        holder = {}

        def epoch():
            holder["bytes"] = drain(loader, device)

        t = timed(epoch, repeats, warmup, dev)
        row = {"variant": variant, "dtype": dtype, "way": way, "samples_per_s": n / t["median_s"],
               "GB_per_s": holder["bytes"] / t["median_s"] / 1e9, "median_s": t["median_s"], "min_s": t["min_s"],
               "max_s": t["max_s"], "samples": n, "device": dev}  # fmt: skip
        rows.append(row)
        print(
            f"{variant:11s} {dtype:7s} {way:34s} {row['samples_per_s']:10.0f} samples/s {row['GB_per_s']:7.3f} GB/s",
            flush=True,
        )
        return row

    try:
        print(f"featurizing waveform ({len(index.clips):,} clips, on {dev}) ...", flush=True)
        wave = featurize(FeatureParams("waveform"), root, out=tmp / "waveform.zarr", device=dev).store
        n = len(split_rows(open_store(wave), "train"))
        for variant in args.variants.split(","):
            peer_rate = 0.0
            for w in workers:

                def make(w=w, variant=variant):
                    return peer_loader(
                        root, FeatureParams(variant), batch_size=args.batch_size, num_workers=w, indices=train_idx
                    )

                peer_rate = max(
                    peer_rate,
                    measure(variant, "float32", f"peer, num_workers={w}", make, len(train_idx))["samples_per_s"],
                )
            for dtype in args.dtypes.split(","):
                print(f"featurizing {variant} {dtype} ({len(index.clips):,} clips, on {dev}) ...", flush=True)
                store = featurize(
                    FeatureParams(variant, dtype=dtype), root, out=tmp / f"{variant}-{dtype}.zarr", device=dev
                ).store
                for mode in modes:
                    r = measure(
                        variant,
                        dtype,
                        f"speechcls {mode}",
                        lambda mode=mode, store=store: FeatureLoader(
                            store, "train", batch_size=args.batch_size, device=dev, mode=mode
                        ),
                        n,
                    )
                    r["ratio_vs_peer"] = r["samples_per_s"] / peer_rate
                if args.checksum_cost and dtype == "float32" and "stream" in modes:
                    bare = unchecked_store(featurize, FeatureParams(variant), root, tmp / f"{variant}-nocrc.zarr", dev)
                    r = measure(
                        variant,
                        dtype,
                        "speechcls stream, no checksums",
                        lambda: FeatureLoader(bare, "train", batch_size=args.batch_size, device=dev, mode="stream"),
                        n,
                    )
                    r["ratio_vs_peer"] = r["samples_per_s"] / peer_rate
            for mode in modes:
                r = measure(
                    variant,
                    "int16",
                    f"speechcls waveform {mode} + on-device",
                    lambda mode=mode: FeatureLoader(
                        wave, "train", batch_size=args.batch_size, device=dev, mode=mode, features=variant
                    ),
                    n,
                )
                r["ratio_vs_peer"] = r["samples_per_s"] / peer_rate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"data": str(root), "train_clips": n}
    md = md_table(
        rows,
        [
            "variant",
            "dtype",
            "way",
            "samples_per_s",
            "GB_per_s",
            "ratio_vs_peer",
            "median_s",
            "min_s",
            "max_s",
            "device",
        ],
    )
    stem = write_results("input_pipeline", info, rows, md, args.out, repeats=repeats, quick=args.quick)
    print(md)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
