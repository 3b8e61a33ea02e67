"""Streaming under torchrun: what one rank does per epoch when every rank reads only its own chunks
against every rank reading every chunk and keeping its part (the fallback for coarse stores).

    python benchmarks/stream_ranks.py [--root TREE] [--variants mel,complex] [--worlds 2,4] [--quick]

The ranks of a world are run one after another in this process (each rank's loader is what that rank
runs; on a real job they run at once on their own GPUs or nodes), so the number that matters is one
rank's epoch: its seconds and the chunks it reads. No model runs. Median of --repeats epochs after a
warm-up epoch; the store is featurized (not timed) into a temporary folder, and the page cache holds it
after the warm-up, so this measures decompression and gathering, not the disk or network a real
store adds on top (which scales with the chunks read even more directly).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from featurize import bench_tree  # noqa: E402
from input_pipeline import drain  # noqa: E402

from common import machine, md_table, timed, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--voices", type=int, default=134, help="synthetic voices (x 30 words) without --root")
    ap.add_argument("--variants", default="mel,complex")
    ap.add_argument("--worlds", default="2,4")
    ap.add_argument("--chunk-rows", type=int, default=None, help="[default: featurize's, ~16 MB chunks]")
    ap.add_argument("--batch-size", type=int, default=128, help="per rank")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="one epoch each, no warm-up (tests)")
    ap.add_argument("--out", type=Path, default=None, help="[default: benchmarks/results, with --quick results/quick]")
    args = ap.parse_args()
    from speechcls.config import FeatureParams
    from speechcls.dist import Rank
    from speechcls.featurize import featurize
    from speechcls.loader import FeatureLoader

    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    root = bench_tree(args.root, args.voices)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-stream-ranks-"))
    try:
        for variant in args.variants.split(","):
            print(f"featurizing {variant} ...", flush=True)
            store = featurize(
                FeatureParams(variant), root, out=tmp / f"{variant}.zarr", device="cpu", chunk_rows=args.chunk_rows
            ).store
            for world in map(int, args.worlds.split(",")):
                per_way = {}
                for own in (False, True):
                    seconds, chunks, samples, plans = [], [], [], set()
                    for rank in range(world):
                        loader = FeatureLoader(store, "train", batch_size=args.batch_size, device="cpu", mode="stream",
                                               rank=Rank(rank, world), own_chunks=own)  # fmt: skip
                        loader.set_epoch(1)
                        plan = loader.stream.plan(1)
                        plans.add("own chunks" if plan.own else "every chunk")
                        chunks.append(len(plan.chunks))
                        samples.append(sum(plan.sizes[rank]) if plan.own else sum(b - a for a, b in loader.bounds))
                        seconds.append(timed(lambda: drain(loader, "cpu"), repeats, warmup)["median_s"])
                    row = {
                        "variant": variant,
                        "world": world,
                        "ranks_read": " / ".join(sorted(plans)),
                        "rank_epoch_s": float(np.mean(seconds)),
                        "slowest_rank_s": float(max(seconds)),
                        "chunks_per_rank": float(np.mean(chunks)),
                        "rank_samples_per_s": float(np.mean(samples) / np.mean(seconds)),
                        "train_rows": int(sum(samples)),
                    }
                    per_way[own] = row
                    rows.append(row)
                    print(
                        f"{variant:8s} world {world} {row['ranks_read']:12s} "
                        f"{row['rank_epoch_s']:.3f} s per rank epoch, "
                        f"{row['chunks_per_rank']:.1f} chunks per rank",
                        flush=True,
                    )
                per_way[True]["speedup"] = per_way[False]["slowest_rank_s"] / per_way[True]["slowest_rank_s"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"data": str(root), "batch_size_per_rank": args.batch_size}
    md = md_table(
        rows,
        [
            "variant",
            "world",
            "ranks_read",
            "chunks_per_rank",
            "rank_epoch_s",
            "slowest_rank_s",
            "rank_samples_per_s",
            "speedup",
            "train_rows",
        ],
    )
    stem = write_results("stream_ranks", info, rows, md, args.out, repeats=repeats, quick=args.quick)
    print(md)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
