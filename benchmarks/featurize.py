"""featurize throughput: the peer's one on-the-fly pass vs `speechcls featurize` end to end, per variant,
with the stage breakdown of each of our runs; and (--scaling) each stage's rate by worker count.

Each timed run is a process of its own, timed from its start to its exit: what a user waits for (the
imports included). Peer: `python benchmarks/peer.py`, one pass of the DataLoader over every clip (batch
128, shuffle), num_workers 0 and the machine's core count. Ours: featurize from the tree into a fresh,
complete store (index, decode, features, encoding, writes) with the CLI's imports, for each backend
(torch, DALI where installed), device (CPU, CUDA where present), --dtypes and --workers count (default:
every core). Before every run the disk is synced and left --settle seconds: a store's writeback must not
fall into the next run. The ratio is ours / the faster peer. Median of --repeats after --warmup runs; the
stage breakdown printed is the median run's. The disk's own write rate (2 GB, fsynced) is measured
before and after: a store larger than the page cache's dirty limit is written at that rate.

--scaling instead measures the stages on their own, by worker count (1, 2, the core count, or
--workers): decoding (our RIFF reader and libsndfile, on a thread pool and on a process pool), the CPU
features by sub-batch size (one torch thread per worker; and torch's own intra-op threads on one call
per 256-clip block, the way before), chunk encoding and file writing. Per-core rates there predict
another machine's.

    python benchmarks/featurize.py [--root TREE] [--voices 134] [--variants mel,spectrogram] [--quick]
    python benchmarks/featurize.py --full [--dtypes float32,float16] [--tmp DIR]   # 64,727 clips
    python benchmarks/featurize.py --scaling [--root TREE] [--workers 1,2] [--clips 2048]

Without --root it synthesizes a tree (`speechcls synth`, 30 words x --voices) under benchmarks/.data/;
with --clips N (--full: 64,727, Speech Commands v0.01's size) a tools/make_tree.py tree of N clips there."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, peer_workers, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent


def bench_tree(root: Path | None, voices: int, clips: int | None = None) -> Path:
    """--root; else with `clips` a tools/make_tree.py tree of that many clips (--full: Speech Commands'
    64,727), else the synthetic tree of `voices` x 30 words; under benchmarks/.data/, built once."""
    if root is not None:
        print(f"tree: {root}", flush=True)
        return root
    if clips is not None:
        where = HERE / ".data" / f"tree_{clips}"
        if not (where / "testing_list.txt").exists():
            print(f"building a {clips:,}-clip tree under {where} (tools/make_tree.py; kept) ...", flush=True)
            make = HERE.parent / "tools" / "make_tree.py"
            subprocess.run([sys.executable, str(make), "--out", str(where), "--clips", str(clips)], check=True)
        print(f"tree: {where}", flush=True)
        return where
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


def worker_counts(spec: str | None, quick: bool) -> list[int]:
    """--workers "1,4,16", else 1, 2 and the core count for --scaling (just the core count with --quick)."""
    from speechcls.featurize import default_workers

    if spec:
        return [int(w) for w in spec.split(",")]
    return [default_workers()] if quick else sorted({1, 2, default_workers()})


# What a user waits for: each timed run is a process of its own, timed from its start to its exit, as
# `speechcls featurize` is (the interpreter, the imports: torch, torchaudio, zarr, ~2-3 s here; then the
# featurize; then the exit), and so is the peer's epoch (`python benchmarks/peer.py`: its imports, the
# DataLoader's workers, every batch). Timing featurize() inside a warm benchmark process, as this file did
# before, left the imports out: on 4,020 clips they were two thirds of what a user waits for.
OURS = """
import json, sys
import speechcls.cli  # the CLI's own imports (typer, rich), as `speechcls featurize` pays them
from pathlib import Path
from speechcls.config import FeatureParams
from speechcls.featurize import featurize
a = json.loads(sys.argv[1])
r = featurize(FeatureParams(a["variant"], dtype=a["dtype"]), Path(a["root"]), out=Path(a["out"]), backend=a["backend"],
              device=a["device"], workers=a["workers"])
p = r.profile
print("PROFILE " + json.dumps({"workers": p.workers, "bound": p.bound, "setup_s": p.setup_s, "pipeline_s": p.pipeline_s,
                               "finish_s": p.finish_s, "stages": p.stages, "lines": p.lines()}))
"""


def _settle(settle_s: float) -> None:
    """Before a timed run: the dirty pages of earlier runs written out (their writeback would share the disk
    with this run), then a pause for the storage to catch up."""
    os.sync()
    time.sleep(settle_s)


def _process_s(cmd: list[str]) -> tuple[float, str]:
    """Seconds from the start of `cmd` to its exit, and its output."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"COLUMNS": "200"})
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def disk_write_MBps(folder: Path, mb: int) -> float:
    """MB/s of writing `mb` MB of new data to `folder` and fsyncing it: the storage's own write rate, which
    bounds a featurize whose store outgrows the page cache's dirty limit."""
    path = folder / "disk-probe.bin"
    block, blocks = os.urandom(16 << 20), max(1, mb // 16)
    t = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(blocks):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t
    path.unlink()
    return blocks * len(block) / 1e6 / seconds


def featurize_runs(args, root: Path, n: int, tmp: Path) -> tuple[list[dict], list[str]]:
    """The peer and our featurize per variant, engine, dtype and worker count, each run a process timed
    from start to exit after the disk settled; rows and the breakdowns."""
    import torch

    from speechcls.audio import dali

    repeats, warmup = (1, 0) if args.quick else (args.repeats, args.warmup)
    peer_counts = [] if args.no_peer else peer_workers(args.peer_workers, args.quick)
    ours_counts = [int(w) for w in args.workers.split(",")] if args.workers else [None]
    engines = [("torch", "cpu")] + ([("dali", "cpu")] if dali.available() else [])
    if torch.cuda.is_available():
        engines.append(("torch", "cuda"))
    if args.engines != "all":
        engines = [tuple(e.split("/")) for e in args.engines.split(",")]
    settle = 0.0 if args.quick else args.settle
    rows, breakdowns = [], []
    for variant in args.variants.split(","):
        peer = f"peer (num_workers {', '.join(map(str, peer_counts))}) then " if peer_counts else ""
        print(
            f"featurizing {variant}: {n:,} clips, {peer}ours ({', '.join('/'.join(e) for e in engines)}, workers "
            f"{args.workers or 'all'}, {args.dtypes}), {repeats} repeat(s) after {warmup} warm-up, each a process ...",
            flush=True,
        )
        peer_best = None
        for workers in peer_counts:
            cmd = [sys.executable, str(HERE / "peer.py"), "--root", str(root), "--variant", variant,
                   "--workers", str(workers)]  # fmt: skip
            times = []
            for _ in range(warmup + repeats):
                _settle(settle)
                times.append(_process_s(cmd)[0])
            times = times[warmup:]
            rate = n / statistics.median(times)
            peer_best = max(peer_best or 0.0, rate)
            rows.append({"variant": variant, "way": f"peer, num_workers={workers}", "dtype": "float32",
                         "clips_per_s": rate, "median_s": statistics.median(times), "min_s": min(times),
                         "max_s": max(times), "threads": 1})  # fmt: skip
            print(f"{variant:11s} {rows[-1]['way']:40s} {rate:8.0f} clips/s", flush=True)
        for backend, device in engines:
            if backend == "dali" and variant not in dali.DALI_VARIANTS:
                continue  # DALI serves only the power variants; the others would time torch twice
            for dtype in args.dtypes.split(",") if variant != "waveform" else ["int16"]:
                for workers in ours_counts:
                    job = {"variant": variant, "dtype": "float32" if dtype == "int16" else dtype,
                           "root": str(root), "out": str(tmp / "s.zarr"), "backend": backend, "device": device,
                           "workers": workers}  # fmt: skip
                    runs = []
                    for _ in range(warmup + repeats):
                        shutil.rmtree(tmp / "s.zarr", ignore_errors=True)  # a fresh location, as the peer's epoch
                        _settle(settle)
                        seconds, out = _process_s([sys.executable, "-c", OURS, json.dumps(job)])
                        line = next(x for x in out.splitlines() if x.startswith("PROFILE "))
                        runs.append((seconds, json.loads(line[len("PROFILE ") :])))
                    shutil.rmtree(tmp / "s.zarr", ignore_errors=True)
                    runs = sorted(runs[warmup:], key=lambda r: r[0])
                    times = [t for t, _ in runs]
                    median_s, profile = runs[len(runs) // 2]
                    rate = n / median_s
                    way = f"speechcls featurize {backend}/{device}" + (f", workers={workers}" if workers else "")
                    rows.append({"variant": variant, "way": way, "dtype": dtype, "clips_per_s": rate,
                                 "min_s": min(times), "median_s": median_s, "max_s": max(times), "threads": 2,
                                 "workers": profile["workers"],
                                 "ratio_vs_peer": rate / peer_best if peer_best else None,
                                 "bound": profile["bound"], "setup_s": profile["setup_s"],
                                 "pipeline_s": profile["pipeline_s"], "finish_s": profile["finish_s"],
                                 "stages": profile["stages"]})  # fmt: skip
                    ratio = f"  x{rate / peer_best:.2f} vs peer" if peer_best else ""
                    print(f"{variant:11s} {way + ' ' + dtype:40s} {rate:8.0f} clips/s{ratio}", flush=True)
                    lines = [f"{variant}, {backend}/{device}, {dtype}, {profile['workers']} workers (the median run, "
                             f"{median_s:.2f} s from the process's start to its exit):"]  # fmt: skip
                    lines += ["    " + x for x in profile["lines"]]
                    print("\n".join(lines), flush=True)
                    breakdowns.append("\n".join(lines))
    return rows, breakdowns


# --- --scaling: each stage alone, by worker count --------------------------------------------------


def decode_group(root: str, rels: list[str], how: str):
    """Read and decode `rels` (one task of a pool): (n, 16000) float32, as featurize's decode stage does
    ("riff": decode.audio_from_bytes, RIFF reader then libsndfile; "libsndfile": soundfile on the bytes).
    Module level, so a process pool can run it; its result is pickled back there."""
    import io

    import google_crc32c
    import numpy as np
    import soundfile as sf

    from speechcls.audio import decode

    out = np.zeros((len(rels), 16000), dtype=np.float32)
    for i, rel in enumerate(rels):
        with open(Path(root) / rel, "rb") as f:
            data = f.read()
        google_crc32c.value(data)
        try:
            if how == "riff":
                audio, _ = decode.audio_from_bytes(data, Path(rel))
            else:
                with sf.SoundFile(io.BytesIO(data)) as sfile:
                    sfile.extra_info  # noqa: B018 (featurize reads the header log for truncation)
                    audio = sfile.read(dtype="float32", always_2d=True)[:, 0]
        except Exception:  # a bad file: skipped, as featurize skips it
            continue
        out[i, : min(16000, len(audio))] = audio[:16000]
    return out


def _clock(fn, *args):
    """A callable that runs fn(*args) once and returns its seconds."""

    def once() -> float:
        t = time.perf_counter()
        fn(*args)
        return time.perf_counter() - t

    return once


def _decode_cases(root: Path, rels: list[str], threads: dict, procs: dict) -> dict:
    """Reading and decoding `rels` in tasks of 32 files: RIFF reader vs libsndfile, threads vs processes."""
    groups = [rels[i : i + 32] for i in range(0, len(rels), 32)]

    def job(pool, how: str) -> None:
        list(pool.map(decode_group, [str(root)] * len(groups), groups, [how] * len(groups)))

    return {
        ("decode", "-", f"{how}, {kind}", w): _clock(job, pools[w], how)
        for w in threads
        for how in ("riff", "libsndfile")
        for kind, pools in (("threads", threads), ("processes", procs))
    }


def _features_cases(variant: str, waves, threads: dict) -> dict:
    """The CPU features of `waves` by sub-batch (one torch thread per worker), and the way before: 256-clip
    calls on torch's intra-op threads."""
    import torch

    from speechcls.audio.features import FeatureExtractor
    from speechcls.config import FeatureParams
    from speechcls.featurize import SUB_BATCH

    ex = FeatureExtractor(FeatureParams(variant))

    def features(sub: int, pool) -> None:
        def part(i: int):
            with torch.inference_mode():
                return ex(torch.from_numpy(waves[i : i + sub])).numpy()

        list(pool.map(part, range(0, len(waves), sub)))

    class ThisThread:  # the calls one after another on this thread
        map = map

    def intra_op(workers: int) -> float:  # torch's threads at `workers` for the calls, then back to one
        torch.set_num_threads(workers)
        try:
            return _clock(features, 256, ThisThread)()
        finally:
            torch.set_num_threads(1)

    cases = {}
    for w, pool in threads.items():
        for sub in sorted({8, 16, 32, 64, 128, 256, SUB_BATCH}):
            cases[("features", variant, f"sub-batch {sub}, 1 torch thread each", w)] = _clock(features, sub, pool)
        cases[("features", variant, "256-clip calls, torch intra-op threads", w)] = lambda w=w: intra_op(w)
    return cases


def _store_cases(variant: str, waves, threads: dict, stages: list[str], tmp: Path) -> dict:
    """Encoding the features of `waves` chunk by chunk (the store's codecs, as featurize does) and writing
    the encoded chunks to new files (a temporary file renamed into place, as zarr's LocalStore does)."""
    import torch
    import zarr

    from speechcls.audio.features import FeatureExtractor
    from speechcls.config import FeatureParams
    from speechcls.store import format as fmt
    from speechcls.store import layout
    from speechcls.store.writer import encode_chunk

    params = FeatureParams(variant)
    ex, n = FeatureExtractor(params), len(waves)
    with torch.inference_mode():
        feats = torch.cat([ex(torch.from_numpy(waves[i : i + 256])) for i in range(0, n, 256)]).numpy()
    rows, codec = layout.default_chunk_rows(params), fmt.default_codec(variant, params.store_dtype)
    array = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w").create_array(
        variant, shape=feats.shape, chunks=(rows, *feats.shape[1:]), dtype=feats.dtype, fill_value=0,
        compressors=fmt.checksummed(fmt.make_codec(codec)), config=fmt.ARRAY_CONFIG,
    ).with_config(fmt.ARRAY_CONFIG)  # fmt: skip
    chunks = range(-(-n // rows))
    encoded = [encode_chunk(array, c, feats[c * rows : (c + 1) * rows])[1].to_bytes() for c in chunks]

    def encode(pool) -> None:
        list(pool.map(lambda c: encode_chunk(array, c, feats[c * rows : (c + 1) * rows]), chunks))

    def write(pool) -> None:
        def one(c: int) -> None:
            part = tmp / f"{variant}-{c}.{uuid.uuid4().hex}.partial"
            part.write_bytes(encoded[c])
            os.replace(part, tmp / f"{variant}-{c}")

        list(pool.map(one, chunks))

    cases = {}
    for w, pool in threads.items():
        if "encode" in stages:
            cases[("encode", variant, f"{codec} + crc32c, per chunk", w)] = _clock(encode, pool)
        if "write" in stages:
            cases[("write", variant, "encoded chunks to new files", w)] = _clock(write, pool)
    return cases


def scaling_rows(
    root: Path, variants: list[str], counts: list[int], clips: int, repeats: int, stages: list[str]
) -> list[dict]:
    """clips/s of each stage alone, median of `repeats` (interleaved, after a warm-up), by worker count."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from speechcls.data.tree import index_tree

    rels = index_tree(root).paths[:clips]
    threads = {w: ThreadPoolExecutor(w) for w in counts}
    spawn = multiprocessing.get_context("spawn")  # a fork of this threaded process could deadlock
    procs = {w: ProcessPoolExecutor(w, mp_context=spawn) for w in counts}
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-scaling-"))
    try:
        cases = _decode_cases(root, rels, threads, procs) if "decode" in stages else {}
        waves = decode_group(str(root), rels, "riff")
        for variant in variants:
            if "features" in stages and variant != "waveform":
                cases |= _features_cases(variant, waves, threads)
            cases |= _store_cases(variant, waves, threads, stages, tmp)
        times = {key: [] for key in cases}
        for fn in cases.values():
            fn()  # warm-up: process pools started, caches and allocators warm
        for _ in range(repeats):
            for key, fn in cases.items():
                times[key].append(fn())
    finally:
        for pool in (*threads.values(), *procs.values()):
            pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for (stage, variant, way, w), ts in times.items():
        rate = len(rels) / statistics.median(ts)
        rows.append({"stage": stage, "variant": variant, "way": way, "workers": w, "clips_per_s": rate,
                     "per_worker": rate / w, "median_s": statistics.median(ts), "min_s": min(ts)})  # fmt: skip
    return rows


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
    ap.add_argument(
        "--workers", default=None, help="our worker counts, e.g. 1,4,8,16 [default: every core; --scaling: 1, 2, all]"
    )
    ap.add_argument("--no-peer", action="store_true", help="time only ours (e.g. by --workers count)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    ap.add_argument("--tmp", type=Path, default=None, help="where our stores are written [default: the system's temp]")
    ap.add_argument("--scaling", action="store_true", help="each stage alone by worker count, not the end-to-end runs")
    ap.add_argument("--stages", default="decode,features,encode,write", help="--scaling: the stages to time")
    ap.add_argument(
        "--clips", type=int, default=None,
        help="without --root: a tools/make_tree.py tree of this many clips; --scaling: clips of the tree to time "
        "[default: 2048]",
    )  # fmt: skip
    ap.add_argument("--full", action="store_true", help="Speech Commands' size: --clips 64727 (13.4 GB of complex)")
    ap.add_argument("--dtypes", default="float32", help="our stores' dtypes to time, e.g. float32,float16")
    ap.add_argument(
        "--settle", type=float, default=5.0, help="seconds to wait after syncing the disk before each timed run"
    )
    ap.add_argument("--quick", action="store_true", help="one repeat, no warm-up, workers 0 only (for tests)")
    ap.add_argument(
        "--out", type=Path, default=None, help="results folder [default: benchmarks/results; --quick: results/quick]"
    )
    args = ap.parse_args()
    import torch

    from speechcls import config
    from speechcls.data.tree import index_tree

    if args.full:
        args.clips = config.RELEASES["v0.01"].n_clips
    root = bench_tree(args.root, args.voices, None if args.scaling else args.clips)
    n = len(index_tree(root).clips)
    repeats = 1 if args.quick else args.repeats
    if args.scaling:
        counts = worker_counts(args.workers, args.quick)
        clips = min(args.clips or 2048, n)
        print(f"each stage alone: {clips:,} clips, workers {counts}, {repeats} repeat(s) ...", flush=True)
        torch.set_num_threads(1)  # as featurize runs its CPU stages: one torch thread per worker
        rows = scaling_rows(root, args.variants.split(","), counts, clips, repeats, args.stages.split(","))
        info = machine() | {"clips": clips, "data": str(root)}
        md = md_table(rows, ["stage", "variant", "way", "workers", "clips_per_s", "per_worker", "median_s", "min_s"])
        stem = write_results("featurize_scaling", info, rows, md, args.out, repeats=repeats, quick=args.quick)
        print(md)
        print(f"wrote {stem}.json and {stem}.md")
        return
    tmp = Path(tempfile.mkdtemp(prefix="speechcls-bench-", dir=args.tmp))
    try:
        disk = None if args.quick else disk_write_MBps(tmp, 2048)
        if disk is not None:
            print(f"the disk under {tmp} writes {disk:,.0f} MB/s (2 GB, fsynced)", flush=True)
        rows, breakdowns = featurize_runs(args, root, n, tmp)
        after = None if args.quick else disk_write_MBps(tmp, 2048)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = machine() | {"clips": n, "data": str(root)}
    if disk is not None:
        info |= {"disk_write_MBps_before": round(disk), "disk_write_MBps_after": round(after)}
    columns = ["variant", "way", "dtype", "clips_per_s", "median_s", "min_s", "max_s", "ratio_vs_peer", "bound"]
    md = md_table(rows, columns) + "\n\nStage breakdowns (busy: wall seconds with a task of the stage running):\n\n"
    md += "\n\n".join(f"```\n{b}\n```" for b in breakdowns)
    stem = write_results("featurize", info, rows, md, args.out, repeats=repeats, quick=args.quick)
    print(md_table(rows, columns))  # the breakdowns were printed as each run ended
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
