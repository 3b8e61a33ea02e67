"""`speechcls featurize`: every clip of a tree -> features in batched device passes -> a Zarr store.
Orchestration only: the tree comes from data/, decoding and features from audio/, every store decision
and write from store/.

    index (sorted clips) -> seeded row order -> blocks of whole chunks, through four stages at once:
        decode block b+2 || features of block b+1 || encode and write block b (chunks, then its done flag)

One code path for CPU and CUDA; the DALI backend swaps the transform for spectrogram and mel for DALI's,
within the tolerance its parity test states. Under torchrun every rank featurizes a contiguous range of
blocks (whole chunks, so no two ranks write one object); rank 0 creates the store and completes it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechcls import config, dist
from speechcls.config import FeatureParams
from speechcls.data.tree import index_tree
from speechcls.runtime import Progress, resolve_device
from speechcls.store import format as fmt
from speechcls.store.location import Location, to_location
from speechcls.store.reader import read_attrs, store_info
from speechcls.store.writer import StoreWriter, lock, plan


@dataclass
class FeaturizeResult:
    store: Location
    status: str  # "written" | "resumed" | "repaired" | "rebuilt" | "present"
    clips: int
    skipped: dict[str, str]
    resampled: int
    seconds: float  # of this run
    computed: int  # clips computed in this run
    bytes_on_disk: int
    compression_ratio: float
    profile: "Profile | None" = None  # where the time went (a run that computed something)

    @classmethod
    def of(cls, store: Location, status: str, seconds: float = 0.0, computed: int = 0) -> "FeaturizeResult":
        info = store_info(store)
        return cls(
            store, status, info["shape"][0], info["skipped"], info["resampled"], seconds, computed,
            info["bytes_on_disk"], info["compression_ratio"],
        )  # fmt: skip

    @property
    def clips_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        size = self.bytes_on_disk / 1e6
        if self.status == "present":
            return (
                f"{self.store}: already complete: {self.clips} clips, {len(self.skipped)} skipped, "
                f"{size:.1f} MB on disk, compression {self.compression_ratio:.2f}x"
            )
        note = {
            "repaired": f"repaired ({self.computed} clips of lost chunks recomputed): ",
            "rebuilt": "rebuilt (the store there had an older format; this speechcls writes format "
            f"{fmt.FORMAT_VERSION}): ",
        }.get(self.status, "")
        return (
            f"{self.store}: {note}{self.clips} clips, {len(self.skipped)} skipped, {self.seconds:.1f} s, "
            f"{self.clips_per_s:.0f} clips/s, {size:.1f} MB on disk, compression {self.compression_ratio:.2f}x"
        )


def resolve_backend(backend: str, params: FeatureParams, device: str) -> str:
    from speechcls.audio import dali

    if backend == "auto":
        # DALI's CPU pipeline decodes and (spectrogram, mel) transforms faster than torch on a CPU-only
        # machine; with CUDA, torch's batched STFT on the GPU is the fast path and needs no DALI.
        use = device == "cpu" and params.variant in dali.DALI_VARIANTS and dali.available()
        return "dali" if use else "torch"
    if backend == "dali":
        if not dali.available():
            raise ValueError(
                "--backend dali: NVIDIA DALI is not installed; `pip install nvidia-dali-cuda130` (Linux x86_64) "
                "or use --backend torch"
            )
        return "dali"
    if backend != "torch":
        raise ValueError(f"--backend {backend!r}: choose auto, torch or dali")
    return "torch"


def resolve_root(root: str | Path | None, version: str) -> Path:
    """The tree to read: --root, else data/speech_commands_<version>, downloaded if absent."""
    if root is not None:
        return Path(root)
    root = config.default_root(version)
    if not root.is_dir():
        from speechcls.data.download import download_release

        download_release(version, root)
    return root


def codec_for(loc: Location, params: FeatureParams, overwrite: bool) -> str:
    """The codec when --codec is not given: the one of a store already at `loc` (so a store made with an
    earlier default is found present, resumed or repaired, not "made with other settings"), else the
    variant's default (format.default_codec); with `overwrite`, the default."""
    from speechcls.store.writer import store_attrs

    attrs = None if overwrite else store_attrs(loc)
    old = (attrs or {}).get("codec")
    if isinstance(old, str):
        try:
            fmt.make_codec(old)
            return old
        except ValueError:
            pass  # a damaged record: plan() reports the store
    return fmt.default_codec(params.variant, params.store_dtype)


def featurize(
    params: FeatureParams,
    root: str | Path | None = None,
    version: str = config.DEFAULT_VERSION,
    out: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = config.BATCH_SIZE,
    chunk_rows: int | None = None,
    codec: str | None = None,
    overwrite: bool = False,
    row_seed: int = config.ROW_ORDER_SEED,
    workers: int | None = None,
    progress: Progress | None = None,
) -> FeaturizeResult:
    """Featurize the tree at `root` into the store at `out` (default cache/<dataset>/<variant>-<hash>.zarr).

    A complete store with the same settings is left as it is; an incomplete one is resumed; one with
    other settings is an error unless `overwrite`. `codec` None: the store's own when one is at `out`,
    else the variant's default (store/format.py's default_codec). Unreadable clips are skipped and
    recorded. `workers`: threads that compute features on the CPU and encode (default: every core;
    decoding has a thread of its own, reading files max(2, workers)); the stored bytes do not depend on it.
    """
    t_start = time.perf_counter()
    params.validate()
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    if workers is not None and workers <= 0:
        raise ValueError(f"--workers must be positive, got {workers}")
    workers = workers or default_workers()
    if codec is not None:
        fmt.make_codec(codec)  # refuse a bad codec name before any work
    device = resolve_device(device)
    backend = resolve_backend(backend, params, device)
    rank = dist.init(device)
    if not rank.main:
        dist.barrier(rank)  # rank 0 alone downloads a missing tree
    root = resolve_root(root, version)
    if rank.main:
        dist.barrier(rank)
    index = index_tree(root)
    _, rows = fmt.row_arrays(index, row_seed)
    chunk_rows = chunk_rows or fmt.default_chunk_rows(params)
    layout = fmt.Layout(len(index.clips), chunk_rows, -(-batch_size // chunk_rows) * chunk_rows)
    loc = to_location(out) if out is not None else fmt.default_location(index.name, params)
    engine = {"backend": backend, "device": device}
    if codec is None:
        codec = dist.from_main(rank, lambda: codec_for(loc, params, overwrite))
    mine = [b for b in range(layout.n_blocks) if b * rank.world // layout.n_blocks == rank.rank]  # contiguous
    run_device, progress = dist.local_device(device, rank), progress or Progress()
    setup_s = time.perf_counter() - t_start
    # the first blocks decode and their features are computed while the tree is fingerprinted and the store
    # planned and opened
    with _Pipeline(index.root, rows["path"], params, layout, mine, workers, backend, run_device) as pipeline:
        request = fmt.request(params, rows, row_seed, codec, chunk_rows, fmt.tree_fingerprint(index))
        with _lock(rank, loc, root):  # one featurize at a time writes a local store
            # rank 0 alone decides what to do with the location (store/writer.py's plan; never the tree), every
            # rank gets its verdict, errors included, so no rank waits at a barrier for a store that never comes
            status = dist.from_main(rank, lambda: plan(loc, request, engine, overwrite, tree=root))
            if status == "present":
                return FeaturizeResult.of(loc, "present")

            def create() -> StoreWriter:
                attrs = fmt.new_attrs(params, index, version, root, row_seed, engine)
                return StoreWriter.create(loc, params, request, rows, layout, codec, attrs)

            try:
                writer = _open_writer(rank, status, loc, rows, create)
                computed, opened_s, read_s = pipeline.run(writer, progress)
                profile = pipeline.profile(computed, setup_s, opened_s, read_s)
                summary = _finish(writer, rank, computed, time.perf_counter() - t_start)
            except OSError as e:
                raise ValueError(
                    f"cannot write the store at {loc}: {e.strerror or e}. Free space or choose another --out; the "
                    "store is not marked complete and the same command resumes it"
                ) from e
    progress.end()
    if summary is None:  # a rank other than 0: the store as rank 0 completed it
        result = FeaturizeResult.of(loc, "written", 0.0, computed)
    else:
        result = FeaturizeResult(loc, "written", seconds=0.0, computed=computed, **summary)
    result.seconds = time.perf_counter() - t_start
    profile.finish_s = result.seconds - setup_s - profile.pipeline_s
    result.profile = profile
    result.status = {"resume": "resumed", "repair": "repaired", "rebuild": "rebuilt"}.get(status, "written")
    return result


def _lock(rank, loc: Location, root: Path):
    """Rank 0 holds the store's lock (store/writer.py) while it decides and writes. Not taken for a location
    that is, holds or lies inside the tree: plan() refuses those, and no lock file goes into a tree."""
    if not rank.main or not isinstance(loc, Path):
        return contextlib.nullcontext()
    at, tree = loc.resolve(), Path(root).resolve()
    if at == tree or at in tree.parents or tree in at.parents:
        return contextlib.nullcontext()
    return lock(loc)


def _open_writer(rank, status: str | None, loc: Location, rows: dict, create) -> StoreWriter:
    """Rank 0 creates the store (or reopens one to resume or repair) before the other ranks open it. A
    store whose creation was killed (attrs "created" false) is created again: no block was written."""
    if not rank.main:
        dist.barrier(rank)  # rank 0 has made or checked the store
        return StoreWriter.reopen(loc)
    if status in ("resume", "repair") and read_attrs(loc).get("created"):
        writer = StoreWriter.reopen(loc)
        writer.remove_partial_writes()  # of the killed run's last, concurrent writes
        # blocks that lost a chunk are redone with the missing ones (a finished block may have lost one
        # too, in a copy), nothing else
        writer.reopen_damaged(rows)
    else:
        writer = create()
    dist.barrier(rank)  # the store exists: the others may open it
    return writer


# Clips per feature call on the CPU. Measured with `python benchmarks/featurize.py --scaling --clips 1024
# --repeats 5 --stages features --root TREE` (a tools/make_tree.py tree; the 2-core machine, one worker;
# it was busy, load 5-6, so only the ranking counts), clips/s at 8 / 16 / 32 / 64 / 128 / 256 clips a
# call: spectrogram 2,551 / 2,647 / 2,808 / 2,641 / 2,445 / 1,352 (the way before, 256-clip calls on
# torch's intra-op threads: 1,490); mel 2,058 / 2,035 / 2,033 / 2,002 / 1,843 / 1,148; complex 4,599 /
# 3,672 / 4,835 / 4,036 / 3,544 / 2,975. From 8 to 64 clips a call's STFT frames stay in the caches; 256
# (53 MB of complex frames) do not. The stored numbers do not depend on it (tests/test_featurize_pipeline.py).
SUB_BATCH = 32
# files read slower than this on average count as read from storage too (a network file system, whose
# reads /proc/thread-self/io may not count, takes a round trip a file); page-cache reads take 40-110 us
# here, GIL waits included, and reads from this machine's disk 190-370 us (counted there)
SLOW_READ_S = 1e-3
QUEUE_BLOCKS = 2  # blocks waiting between two stages: enough to ride out one slow block, bounded memory


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Every core this process may use, shared among the ranks torchrun started on this node."""
    return max(1, _cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


class _Stage:
    """One stage's time: the intervals its tasks ran (from any thread) and their threads' CPU seconds."""

    def __init__(self, name: str):
        self.name, self.spans, self.cpu_s, self._lock = name, [], 0.0, threading.Lock()
        self.native_cpu_s = 0.0  # CPU of threads outside Python working for the stage (DALI's)

    def run(self, fn, *args):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.spans.append((t, time.perf_counter()))
                self.cpu_s += time.thread_time() - c

    def map(self, pool, fn, *iterables) -> list:
        return list(pool.map(lambda *a: self.run(fn, *a), *iterables))

    def busy_s(self) -> float:
        """Wall seconds during which at least one task of the stage ran (overlapping tasks counted once)."""
        busy, end = 0.0, float("-inf")
        for a, b in sorted(self.spans):
            if b > end:
                busy += b - max(a, end)
                end = b
        return busy


@dataclass
class Profile:
    """Where a featurize run's time went. A stage's `busy_s` is the wall time during which at least one
    of its tasks ran; stages overlap, so busy times add up to more than the run. The stage busy for
    (nearly) the whole pipeline bounds it, unless every core is busy, and then the cores do."""

    clips: int
    workers: int
    setup_s: float  # before the stages start: DALI and zarr loaded on first use, the tree's index, the row order
    open_s: float  # the tree's fingerprint, the store's plan and creation, while the first blocks are computed
    pipeline_s: float  # the stages' start to the last block's done flag (open_s included)
    finish_s: float  # completion: the store's listing, its attributes
    stages: dict[str, dict]  # name -> {"busy_s", "cpu_s"}; decode also "read_s"
    other_cpu_s: float  # CPU in the pipeline outside the stages' tasks: opening the store, zarr's I/O threads

    @property
    def bound(self) -> str:
        cpu = sum(st["cpu_s"] for st in self.stages.values()) + self.other_cpu_s
        cores = min(self.workers, _cores())
        top = max(self.stages, key=lambda k: self.stages[k]["cpu_s"])
        if cpu >= 0.85 * cores * self.pipeline_s:
            return f"the cores ({cpu / self.pipeline_s:.1f} of {cores} busy; {top} takes the most CPU)"
        busy = {name: st["busy_s"] for name, st in self.stages.items()} | {"opening the store": self.open_s}
        name = max(busy, key=busy.get)
        return f"{name} (busy {busy[name] / self.pipeline_s:.0%} of the pipeline)"

    def lines(self) -> list[str]:
        """The breakdown as a small table, then two lines: the run's parts and the bound."""
        out = [f"{'stage':9s} {'busy s':>7s} {'of pipeline':>12s} {'clips/s':>9s} {'cpu s':>7s}"]
        for name, st in self.stages.items():
            busy, rate = st["busy_s"], self.clips / st["busy_s"] if st["busy_s"] > 0 else float("nan")
            note = f"  (reading the files: {st['read_s']:.2f} s)" if "read_s" in st else ""
            out.append(f"{name:9s} {busy:7.2f} {busy / self.pipeline_s:12.0%} {rate:9,.0f} {st['cpu_s']:7.2f}{note}")
        total = self.setup_s + self.pipeline_s + self.finish_s
        out.append(
            f"{self.clips:,} clips in {total:.2f} s: {self.setup_s:.2f} s before the stages (libraries loaded, index, "
            f"row order), "
            f"{self.pipeline_s:.2f} s pipeline ({self.clips / self.pipeline_s:,.0f} clips/s on {self.workers} workers; "
            f"the store opened in its first {self.open_s:.2f} s), {self.finish_s:.2f} s completing the store"
        )
        out.append(
            f"CPU outside the stages' tasks {self.other_cpu_s:.2f} s (opening the store, zarr's file-writing threads); "
            f"bound by {self.bound}"
        )
        return out


def _transform(params: FeatureParams, backend: str, device: str, block_rows: int, workers: int, pool, stage):
    """(B, L) float32 numpy waveforms -> ((B, C, F, T) numpy features in the stored dtype, (B,) finite?).
    On the CPU in SUB_BATCH calls spread over `pool` (one torch thread each: torch releases the GIL); on
    CUDA in one call per block; DALI with its own `workers` threads."""
    import torch

    from speechcls.audio.features import FeatureExtractor

    def finite(features: np.ndarray) -> np.ndarray:
        """(B,) rows all finite? numpy on contiguous rows: ~3 us a clip, where torch.isfinite on a sub-batch
        (its flatten copies the complex variant's permuted view) cost 80-150 us here."""
        if features.dtype.kind != "f":  # int16 waveforms are clamped, always finite
            return np.ones(len(features), dtype=bool)
        return np.isfinite(features.reshape(len(features), -1)).all(axis=1)

    if backend == "dali":
        from speechcls.audio import dali

        if params.variant in dali.DALI_VARIANTS:  # complex and waveform always go through torch
            before = _native_threads()
            engine = dali.DaliEngine(params, batch_size=block_rows, workers=workers)
            # DALI computes on threads of its own: their CPU is the features stage's, not "outside the stages"
            engine_threads = _native_threads() - before - {t.native_id for t in threading.enumerate()}
            cpu0 = _threads_cpu_s(engine_threads)

            def dali_transform(wave: np.ndarray):
                features = stage.run(engine.transform, wave).astype(params.store_dtype, copy=False)
                stage.native_cpu_s = _threads_cpu_s(engine_threads) - cpu0
                return features, stage.run(finite, features)

            return dali_transform
    extractor = FeatureExtractor(params).to(device)
    out_dtype = torch.float16 if params.store_dtype == "float16" else None

    def call(wave: np.ndarray) -> torch.Tensor:
        """(B, C, F, T) features in the stored dtype, where `wave` is, on the device."""
        with torch.inference_mode():
            y = extractor(torch.from_numpy(wave).to(device, non_blocking=True))  # (B, C, F, T) or (B, 1, L) int16
            return y.to(out_dtype) if out_dtype is not None else y  # cast on the device: half the bytes to copy

    if device != "cpu":

        def device_transform(wave: np.ndarray):
            def run():
                y = call(wave)
                ok = torch.isfinite(y.flatten(1)).all(1) if y.is_floating_point() else torch.ones(len(y), dtype=bool)
                return y.cpu().numpy(), ok.cpu().numpy()  # note: a sync point; the next block decodes meanwhile

            return stage.run(run)

        return device_transform

    def cpu_transform(wave: np.ndarray):
        out = np.empty((len(wave), *params.shape), dtype=params.store_dtype)
        ok = np.empty(len(wave), dtype=bool)

        def part(i: int) -> None:
            rows = slice(i, i + SUB_BATCH)
            out[rows] = call(wave[rows]).numpy()  # the complex variant's permuted view: one strided copy
            ok[rows] = finite(out[rows])

        stage.map(pool, part, range(0, len(wave), SUB_BATCH))
        return out, ok

    return cpu_transform


def _refuse_nonfinite(finite: np.ndarray, batch, rels: list[str]) -> None:
    """A decoded clip whose features are not all finite becomes a skipped one (the writer zero-fills its
    row): a float file with samples far out of [-1, 1] overflows the power spectrum to inf, and one such
    row would make every training step NaN."""
    for i in np.flatnonzero(batch.decoded & ~finite):
        peak = float(np.abs(batch.wave[i]).max())
        batch.decoded[i] = False
        batch.skipped[rels[i]] = f"features are not finite (peak sample {peak:.3g}: a float file out of [-1, 1]?)"


class _Failed:
    """What a stage thread passes downstream instead of a block when it failed: the exception."""

    def __init__(self, error: BaseException):
        self.error = error


def _stage_thread(fn, inbox: queue.Queue, outbox: queue.Queue, stop: threading.Event) -> threading.Thread:
    """A thread that takes blocks from `inbox`, applies `fn` and puts the result in `outbox` (bounded:
    it waits while the next stage is behind), in order. None ends the stream; a failure is passed on."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                outbox.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def loop():
        while not stop.is_set():
            try:
                item = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None or isinstance(item, _Failed):
                put(item)
                return
            try:
                result = fn(item)
            except BaseException as e:  # KeyboardInterrupt included: the writer re-raises it
                put(_Failed(e))
                return
            if not put(result):
                return

    thread = threading.Thread(target=loop, daemon=True, name=f"featurize-{getattr(fn, '__name__', 'stage')}")
    thread.start()
    return thread


class _Pipeline:
    """One run's stages, each arrow a bounded queue, so all run at once on different blocks:

        decode (reads on threads, decoding on one) -> features (pool sub-batches | CUDA | DALI)
            -> encode (pool, one task a chunk)
            -> write (the caller's thread, in block order: a block's chunk objects, then its done flag)

    The compression and file writes release the GIL, and so do torch's ops and the file reads. Decoding
    and features start here, on the first of this rank's `blocks`: they need only the tree's index, so
    they overlap what the caller does next (the tree's fingerprint, the store's plan and creation); the
    features stage then waits for `run`, which brings the store and the blocks it still lacks (a resumed
    store's done blocks decoded ahead are dropped)."""

    def __init__(
        self, root: Path, paths, params: FeatureParams, layout, blocks: list[int], workers: int, backend: str,
        device: str,
    ):  # fmt: skip
        import torch

        from speechcls.audio import decode

        self.params, self.layout, self.blocks, self.workers = params, layout, blocks, workers
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()
        self.stages = {name: _Stage(name) for name in ("decode", "features", "encode", "write")}
        self.torch_threads = torch.get_num_threads()
        if device == "cpu":
            torch.set_num_threads(1)  # one torch thread per pool thread: SUB_BATCH calls run side by side
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="featurize")
        self.stop = threading.Event()
        self.writer, self.needed, self.opened = None, None, threading.Event()  # set by run
        # files are decoded on the decode stage's thread (one: audio/decode.py's decode_batch says why) and
        # read there too while they come from the page cache; on max(2, workers) threads once a block came
        # from storage (a cold disk, a network file system: their waits overlap). 4,020 clips, 2 cores,
        # waveform, median of 7 runs (page cache) and 3 (after dropping it), reading on the decoding thread:
        # 0.38-0.44 s, 0.80-0.84 s; on one thread beside it: 0.39-0.43 s, 0.75 s; on 2: 0.40-0.46 s,
        # 0.62-0.65 s; on 4: 0.48-0.50 s, 0.58-0.60 s.
        self.readers = ThreadPoolExecutor(max(2, workers), thread_name_prefix="featurize-read")
        self.from_storage = False
        stage = self.stages["decode"]
        reads = {False: _Serial(), True: _TimedPool(self.readers, stage)}  # the serial reads are decode's time

        def decode_block(b: int):  # soundfile for both backends: the same skip rules and resampler
            rels, fetched = list(paths[layout.block(b)]), _storage_read_bytes()
            batch = stage.run(decode.decode_batch, root, rels, params.sample_rate, params.clip_samples,
                              reads[self.from_storage])  # fmt: skip
            if not self.from_storage and batch.read_bytes:
                fetched = _storage_read_bytes() - fetched if fetched is not None else None
                slow = batch.read_s / len(rels) > SLOW_READ_S
                self.from_storage = (fetched is not None and fetched > batch.read_bytes / 2) or slow
            return b, rels, batch

        self.fed = blocks[: QUEUE_BLOCKS + 1]  # decoded before the store says which blocks it lacks
        self.todo, self.decoded, self.ready = queue.Queue(), queue.Queue(QUEUE_BLOCKS), queue.Queue(QUEUE_BLOCKS)
        for b in self.fed:
            self.todo.put(b)
        try:
            self.transform = _transform(params, backend, device, layout.block_rows, workers, self.pool,
                                        self.stages["features"])  # fmt: skip
        except BaseException:
            self.pool.shutdown()
            self.readers.shutdown()
            torch.set_num_threads(self.torch_threads)
            raise
        self.threads = [
            _stage_thread(decode_block, self.todo, self.decoded, self.stop),
            _stage_thread(self._features_block, self.decoded, self.ready, self.stop),
        ]

    def __enter__(self) -> "_Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        """Stops every stage (after a failure, an interrupt or a store found complete: each thread stops
        after its current block) and gives torch its threads back."""
        import torch

        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.readers.shutdown(wait=True, cancel_futures=True)
        for thread in self.threads:
            thread.join()
        torch.set_num_threads(self.torch_threads)

    def _features_block(self, item):
        """A decoded block's features, then (once the store is open) its chunks handed to the encoders;
        (b, None) for a block the store has already."""
        from speechcls.store.writer import encode_chunk

        b, rels, batch = item
        if self.needed is not None and b not in self.needed:
            return b, None  # decoded ahead, but the store has it already
        features, finite = self.transform(batch.wave)
        _refuse_nonfinite(finite, batch, rels)
        while not self.opened.wait(0.05):  # the first blocks' features are ready before the store
            if self.stop.is_set():
                return b, None
        if b not in self.needed:
            return b, None
        jobs = self.writer.block_chunks(b, features, batch, rels)
        encoding = [self.pool.submit(self.stages["encode"].run, encode_chunk, *job) for job in jobs]
        return b, (rels, batch, features, encoding)

    def run(self, writer, progress: Progress) -> tuple[int, float, float]:
        """Featurize this rank's blocks that `writer`'s store lacks; (clips, seconds the store took to
        open, seconds reading files)."""
        opened_s = time.perf_counter() - self.t0
        layout, stages = self.layout, self.stages
        todo = sorted(set(writer.todo()) & set(self.blocks))
        size = lambda blocks: sum(layout.block(b).stop - layout.block(b).start for b in blocks)  # noqa: E731
        progress.start(f"featurize {self.params.variant}", size(self.blocks), size(self.blocks) - size(todo))
        self.writer, self.needed = writer, set(todo)
        self.opened.set()
        for b in todo:
            if b not in self.fed:
                self.todo.put(b)
        self.todo.put(None)
        computed, read_s = 0, 0.0
        while (item := self.ready.get()) is not None:
            if isinstance(item, _Failed):
                raise item.error
            b, block = item
            if block is None:
                continue
            rels, batch, features, encoding = block
            encoded = [f.result() for f in encoding]
            stages["write"].run(writer.write_block, b, features, batch, rels, encoded)
            read_s += batch.read_s
            computed += len(rels)
            progress.advance(len(rels))
        return computed, opened_s, read_s

    def profile(self, clips: int, setup_s: float, opened_s: float, read_s: float) -> "Profile":
        """The breakdown of the run so far (call once `run` is through)."""
        pipeline_s = time.perf_counter() - self.t0
        stages = {
            name: {"busy_s": st.busy_s(), "cpu_s": st.cpu_s + st.native_cpu_s} for name, st in self.stages.items()
        }
        cpu = time.process_time() - self.cpu0 - sum(st["cpu_s"] for st in stages.values())
        stages["decode"]["read_s"] = read_s
        return Profile(clips, self.workers, setup_s, opened_s, pipeline_s, 0.0, stages, max(0.0, cpu))


def _finish(writer, rank, computed: int, seconds: float) -> dict | None:
    """Rank 0 marks the store complete once every rank's blocks are on disk and returns what the result
    reports of it (FeaturizeResult.of's fields, from what it wrote: no second reading of the store);
    the other ranks return None."""
    from speechcls.store.location import dir_bytes, join

    dist.barrier(rank)  # every rank's blocks are on disk
    summary = None
    if rank.main:
        features_bytes = dir_bytes(join(writer.loc, "features"))
        ratio = writer.features.nbytes / features_bytes if features_bytes else float("nan")
        extra = {
            "seconds": seconds,
            "clips_per_s": computed / seconds if seconds else None,
            "features_bytes_on_disk": features_bytes,
            "compression_ratio": ratio,
            "ranks": rank.world,
        }
        skipped, resampled = writer.finish(extra)
        summary = {"clips": writer.layout.n, "skipped": skipped, "resampled": resampled,
                   "bytes_on_disk": dir_bytes(writer.loc), "compression_ratio": ratio}  # fmt: skip
    dist.barrier(rank)  # rank 0 has marked it complete
    return summary


def _storage_read_bytes() -> int | None:
    """Bytes the calling thread has had fetched from storage, not the page cache (read_bytes of Linux's
    /proc/thread-self/io: not another thread's reads, nor the library pages its first calls fault in;
    None where the kernel does not say)."""
    try:
        with open("/proc/thread-self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _native_threads() -> set[int]:
    """This process's thread ids (Linux; elsewhere none)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _threads_cpu_s(tids: set[int]) -> float:
    """CPU seconds the threads `tids` have used (from /proc, in clock ticks: ~10 ms resolution each)."""
    ticks = 0
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended
    return ticks / os.sysconf("SC_CLK_TCK")


class _Serial:
    """A pool of no threads: map runs the tasks one after another on the calling thread."""

    def map(self, fn, *iterables):
        return map(fn, *iterables)


class _TimedPool:
    """A pool whose map runs each task under a stage's clock (audio/decode.py takes any pool with map)."""

    def __init__(self, pool, stage: _Stage):
        self.pool, self.stage = pool, stage

    def map(self, fn, *iterables):
        return self.stage.map(self.pool, fn, *iterables)
