"""The featurize pipeline: decode, features, encode and write, each a stage thread (or the caller's) joined
by bounded queues so that all run at once on different blocks; the feature transform for each backend and
device; a decoded clip whose features are not finite becomes a skipped one."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from speechcls.config import FeatureParams
from speechcls.featurize.profile import (
    Profile,
    _native_threads,
    _Serial,
    _Stage,
    _storage_read_bytes,
    _threads_cpu_s,
    _TimedPool,
)
from speechcls.runtime import Progress

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

    from speechcls.audio import spectra

    # the spectra straight into the block's rows (audio/spectra.py: torchaudio's numbers, fewer passes),
    # one CpuSpectra a pool thread (each reuses its frame buffer); waveform through the extractor
    local, served = threading.local(), spectra.supports(params)

    def into(wave: np.ndarray, out: np.ndarray) -> None:
        if not served:
            out[:] = call(wave).numpy()
            return
        if not hasattr(local, "spectra"):
            local.spectra = spectra.CpuSpectra(params)
        local.spectra(torch.from_numpy(wave), torch.from_numpy(out))

    # blocks' feature buffers once written (`recycle`), for the next blocks: a fresh 66 MB buffer a block
    # (complex) cost its page faults and the kernel's zeroing. list.append / pop hold the GIL: thread-safe.
    spare: list[np.ndarray] = []

    def cpu_transform(wave: np.ndarray):
        whole = spare.pop() if spare else np.empty((len(wave), *params.shape), dtype=params.store_dtype)
        out = whole[: len(wave)]
        ok = np.empty(len(wave), dtype=bool)

        def part(i: int) -> None:
            rows = slice(i, i + SUB_BATCH)
            into(wave[rows], out[rows])
            ok[rows] = finite(out[rows])

        stage.map(pool, part, range(0, len(wave), SUB_BATCH))
        return out, ok

    def recycle(features: np.ndarray) -> None:
        """`features` (a block's, from cpu_transform) are written: their buffer serves a later block."""
        whole = features if features.base is None else features.base
        if isinstance(whole, np.ndarray) and whole.shape[0] == block_rows and len(spare) < QUEUE_BLOCKS + 1:
            spare.append(whole)

    cpu_transform.recycle = recycle
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
            del encoded  # the chunk objects, views of `features`, are in their files
            if hasattr(self.transform, "recycle"):
                self.transform.recycle(features)
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
