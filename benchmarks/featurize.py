"""featurize throughput: the peer's one on-the-fly pass vs `speechcls featurize` end to end, per variant.

Peer: one pass of the DataLoader over every clip (batch 128, shuffle), num_workers 0 and the machine's
core count. Ours: `featurize()` from the tree into a fresh, complete store (index, decode, features,
compression, writes), for each backend (torch, DALI where installed) and device (CPU, CUDA where present).
The ratio is ours / the faster peer. Median of --repeats after one warm-up run each.

    python benchmarks/featurize.py [--root TREE] [--voices 134] [--variants mel,spectrogram] [--quick]

Without --root it synthesizes a tree (`speechcls synth`, 30 words x --voices) under benchmarks/.data/.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, peer_workers, timed, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent


def bench_tree(root: Path | None, voices: int) -> Path:
    """--root, else the synthetic tree of `voices` x 30 words under benchmarks/.data/ (built once)."""
    if root is not None:
        print(f"tree: {root}", flush=True)
        return root
    from speechcls.config import V001_WORDS
    from speechcls.data.synth import synthesize

    where = HERE / ".data" / f"synth_{voices}v"
    # espeak-ng makes every clip: minutes on 2 cores, so say so before the silence
    print(
        f"building a {voices * len(V001_WORDS):,}-clip synthetic tree under {where} ({voices} voices x "
        f"{len(V001_WORDS)} words, espeak-ng; reused when already there) ...",
        flush=True,
    )
    out, state = synthesize(where, voices=voices, seed=0, noise=0.05)
    print(f"tree {state}: {out}", flush=True)
    return out


def peer_pass(root: Path, params, workers: int) -> None:
    from peer import peer_loader

    for _x, _y in peer_loader(root, params, num_workers=workers):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="a Speech Commands tree [default: synthesize one]")
    ap.add_argument("--voices", type=int, default=134, help="synthetic voices (x 30 words) without --root")
    ap.add_argument("--variants", default="spectrogram,mel,complex,waveform")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--engines", default="all", help="backend/device pairs, e.g. torch/cuda,dali/cpu [default: all available]"
    )
    ap.add_argument(
        "--peer-workers", default=None, help="DataLoader num_workers to time, e.g. 0,16 [default: 0 and the core count]"
    )
    ap.add_argument("--quick", action="store_true", help="one repeat, no warm-up, workers 0 only (for tests)")
    ap.add_argument(
        "--out", type=Path, default=None, help="results folder [default: benchmarks/results; --quick: results/quick]"
    )
    args = ap.parse_args()
    import torch

    from speechcls.audio import dali
    from speechcls.config import FeatureParams
    from speechcls.data.tree import index_tree
    from speechcls.featurize import featurize

    root = bench_tree(args.root, args.voices)
    n = len(index_tree(root).clips)
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    worker_counts = peer_workers(args.peer_workers, args.quick)
    engines = [("torch", "cpu")] + ([("dali", "cpu")] if dali.available() else [])
    if torch.cuda.is_available():
        engines.append(("torch", "cuda"))
    if args.engines != "all":
        engines = [tuple(e.split("/")) for e in args.engines.split(",")]
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-bench-"))
    try:
        for variant in args.variants.split(","):
            params = FeatureParams(variant)
            print(
                f"featurizing {variant}: {n:,} clips, peer (num_workers {', '.join(map(str, worker_counts))}) then "
                f"ours ({', '.join('/'.join(e) for e in engines)}), {repeats} repeat(s) ...",
                flush=True,
            )
            peer_best = 0.0
            for workers in worker_counts:
                t = timed(lambda: peer_pass(root, params, workers), repeats, warmup)
                rate = n / t["median_s"]
                peer_best = max(peer_best, rate)
                rows.append({"variant": variant, "way": f"peer, num_workers={workers}", "clips_per_s": rate,
                             "min_s": t["min_s"], "median_s": t["median_s"], "max_s": t["max_s"],
                             "threads": 1})  # fmt: skip
                print(f"{variant:11s} {rows[-1]['way']:32s} {rate:8.0f} clips/s", flush=True)
            for backend, device in engines:
                if backend == "dali" and variant not in dali.DALI_VARIANTS:
                    continue  # DALI serves only the power variants; the others would time torch twice

                def run():
                    featurize(params, root, out=tmp / "s.zarr", backend=backend, device=device, overwrite=True)

                t = timed(run, repeats, warmup, device)
                rate = n / t["median_s"]
                rows.append({"variant": variant, "way": f"speechcls featurize {backend}/{device}", "clips_per_s": rate,
                             "min_s": t["min_s"], "median_s": t["median_s"], "max_s": t["max_s"],
                             "threads": torch.get_num_threads(), "ratio_vs_peer": rate / peer_best})  # fmt: skip
                print(
                    f"{variant:11s} {rows[-1]['way']:32s} {rate:8.0f} clips/s  x{rate / peer_best:.1f} vs peer",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"clips": n, "data": str(root)}
    md = md_table(rows, ["variant", "way", "clips_per_s", "median_s", "min_s", "max_s", "threads", "ratio_vs_peer"])
    stem = write_results("featurize", info, rows, md, args.out, repeats=repeats, quick=args.quick)
    print(md)
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
