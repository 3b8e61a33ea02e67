"""`speechcls featurize`: every clip of a tree -> features in batched device passes -> a Zarr store.
Orchestration only: the tree comes from data/, decoding and features from audio/, every store decision
and write from store/.

    index (sorted clips) -> seeded row order -> blocks of whole chunks:
        decode block b+1 (thread pool)  ||  features of block b on the device -> write block b

One code path for CPU and CUDA; the DALI backend swaps the transform for spectrogram and mel for DALI's,
within the tolerance its parity test states. Under torchrun every rank featurizes a contiguous range of
blocks (whole chunks, so no two ranks write one object); rank 0 creates the store and completes it.
"""

from __future__ import annotations

import contextlib
import os
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


def featurize(
    params: FeatureParams,
    root: str | Path | None = None,
    version: str = config.DEFAULT_VERSION,
    out: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = config.BATCH_SIZE,
    chunk_rows: int | None = None,
    codec: str = fmt.DEFAULT_CODEC,
    overwrite: bool = False,
    row_seed: int = config.ROW_ORDER_SEED,
    workers: int | None = None,
    progress: Progress | None = None,
) -> FeaturizeResult:
    """Featurize the tree at `root` into the store at `out` (default cache/<dataset>/<variant>-<hash>.zarr).

    A complete store with the same settings is left as it is; an incomplete one is resumed; one with
    other settings is an error unless `overwrite`. Unreadable clips are skipped and recorded.
    """
    params.validate()
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
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
    request = fmt.request(params, rows, row_seed, codec, chunk_rows, fmt.tree_fingerprint(index))
    engine = {"backend": backend, "device": device}
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
            device = dist.local_device(device, rank)
            result = _run(
                writer, index.root, rows["path"], params, backend, device, workers, progress or Progress(), rank
            )
        except OSError as e:
            raise ValueError(
                f"cannot write the store at {loc}: {e.strerror or e}. Free space or choose another --out; the store "
                "is not marked complete and the same command resumes it"
            ) from e
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
        # blocks that lost a chunk are redone with the missing ones (a finished block may have lost one
        # too, in a copy), nothing else
        writer.reopen_damaged(rows)
    else:
        writer = create()
    dist.barrier(rank)  # the store exists: the others may open it
    return writer


def _transform(params: FeatureParams, backend: str, device: str, block_rows: int, workers: int):
    """(B, L) float32 numpy waveforms -> (B, C, F, T) numpy features in the stored dtype."""
    import torch

    from speechcls.audio.features import FeatureExtractor

    if backend == "dali":
        from speechcls.audio import dali

        if params.variant in dali.DALI_VARIANTS:  # complex and waveform always go through torch
            engine = dali.DaliEngine(params, batch_size=block_rows, workers=workers)
            return lambda wave: engine.transform(wave).astype(params.store_dtype, copy=False)
    extractor = FeatureExtractor(params).to(device)
    out_dtype = torch.float16 if params.store_dtype == "float16" else None

    def transform(wave: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = extractor(torch.from_numpy(wave).to(device, non_blocking=True))  # (B, C, F, T) or (B, 1, L) int16
            if out_dtype is not None:
                y = y.to(out_dtype)  # cast on the device: half the bytes to copy back
            return y.cpu().numpy()  # note: a sync point; the next block is decoding meanwhile

    return transform


def _refuse_nonfinite(features: np.ndarray, batch, rels: list[str]) -> np.ndarray:
    """A decoded clip whose features are not all finite becomes a skipped one (write_block zero-fills
    its row): a float file with samples far out of [-1, 1] overflows the power spectrum to inf, and one
    such row would make every training step NaN. Checked once per block on the host copy the writer
    needs anyway; int16 waveforms are clamped, so always finite."""
    if features.dtype.kind != "f":
        return features
    finite = np.isfinite(features.reshape(len(features), -1)).all(axis=1)  # (B,)
    for i in np.flatnonzero(batch.decoded & ~finite):
        peak = float(np.abs(batch.wave[i]).max())
        batch.decoded[i] = False
        batch.skipped[rels[i]] = f"features are not finite (peak sample {peak:.3g}: a float file out of [-1, 1]?)"
    return features


def _run(writer, root, paths, params, backend, device, workers, progress: Progress, rank) -> FeaturizeResult:
    """Featurize the blocks not yet done that belong to this rank (contiguous ranges of blocks, so
    ranks write disjoint chunk objects); rank 0 marks the store complete once every rank is through."""
    from speechcls.audio import decode

    layout = writer.layout
    mine = [b for b in range(layout.n_blocks) if b * rank.world // layout.n_blocks == rank.rank]
    todo = sorted(set(writer.todo()) & set(mine))
    size = lambda blocks: sum(layout.block(b).stop - layout.block(b).start for b in blocks)  # noqa: E731
    progress.start(f"featurize {params.variant}", size(mine), size(mine) - size(todo))
    workers = workers or os.cpu_count() or 1
    transform = _transform(params, backend, device, layout.block_rows, workers)

    def decode_block(b: int, pool):  # soundfile for both backends: the same skip rules and resampler
        return decode.decode_batch(root, list(paths[layout.block(b)]), params.sample_rate, params.clip_samples, pool)

    t0 = time.perf_counter()
    computed = 0
    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as ahead:
        pending = None
        for k, b in enumerate(todo):
            batch = pending.result() if pending is not None else decode_block(b, pool)
            if k + 1 < len(todo):  # decode the next block while this one is transformed and written
                pending = ahead.submit(decode_block, todo[k + 1], pool)
            rels = list(paths[layout.block(b)])
            features = _refuse_nonfinite(transform(batch.wave), batch, rels)
            writer.write_block(b, features, batch, rels)
            computed += len(rels)
            progress.advance(len(rels))
    seconds = time.perf_counter() - t0
    dist.barrier(rank)  # every rank's blocks are on disk
    info = store_info(writer.loc)
    if rank.main:
        writer.finish(
            {
                "seconds": seconds,
                "clips_per_s": computed / seconds if seconds else None,
                "features_bytes_on_disk": info["features_bytes_on_disk"],
                "compression_ratio": info["compression_ratio"],
                "ranks": rank.world,
            }
        )
    dist.barrier(rank)  # rank 0 has marked it complete
    progress.end()
    return FeaturizeResult.of(writer.loc, "written", seconds, computed)
