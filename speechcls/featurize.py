"""`speechcls featurize`: every clip of a tree -> features in batched device passes -> a Zarr store.

    index (sorted clips) -> seeded row order -> blocks of whole chunks:
        decode block b+1 (thread pool)  ||  features of block b on the device -> write block b

One code path for CPU and CUDA; the DALI backend swaps the decoder (and, for spectrogram and mel, the
transform) for DALI's, within the tolerance its parity test states.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from speechcls import config, store
from speechcls.config import FeatureParams
from speechcls.dataset import DatasetIndex, index_tree


@dataclass
class FeaturizeResult:
    path: store.Where
    status: str  # "written" | "resumed" | "repaired" | "rebuilt" | "present"
    clips: int
    skipped: dict[str, str]
    resampled: int
    seconds: float  # of this run
    computed: int  # clips computed in this run
    bytes_on_disk: int
    compression_ratio: float
    backend: str = ""
    device: str = ""

    @property
    def clips_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        size = self.bytes_on_disk / 1e6
        if self.status == "present":
            return (
                f"{self.path}: already complete: {self.clips} clips, {len(self.skipped)} skipped, "
                f"{size:.1f} MB on disk, compression {self.compression_ratio:.2f}x"
            )
        note = {
            "repaired": f"repaired ({self.computed} clips of lost chunks recomputed): ",
            "rebuilt": f"rebuilt (the store there had an older format; this speechcls writes format {config.STORE_FORMAT_VERSION}): ",
        }.get(self.status, "")
        return (
            f"{self.path}: {note}{self.clips} clips, {len(self.skipped)} skipped, {self.seconds:.1f} s, "
            f"{self.clips_per_s:.0f} clips/s, {size:.1f} MB on disk, compression {self.compression_ratio:.2f}x"
        )


def resolve_backend(backend: str, params: FeatureParams, device: str) -> str:
    from speechcls import dali

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
        from speechcls.download import download_release

        download_release(version, root)
    return root


def row_arrays(index: DatasetIndex, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The seeded row order (row r holds clip perm[r]) and the per-row arrays known before decoding."""
    perm = np.random.default_rng(seed).permutation(len(index.clips))
    clips = [index.clips[i] for i in perm]
    official = index.official[perm] if index.official is not None else np.full(len(perm), -1, dtype=np.int8)
    rows = {
        "label": np.array([c.label for c in clips], dtype=np.int64),
        "split": official.astype(np.int8),
        "speaker": np.array([c.speaker for c in clips], dtype=str),
        "path": np.array([c.path for c in clips], dtype=str),
    }
    return perm, rows


def _existing(path: store.Where, request: dict, engine: dict, overwrite: bool) -> str | None:
    """What to do with a store already at `path`: None (create), "present", "resume", "repair" (a
    complete store that lost chunk objects) or "rebuild" (an older store format)."""
    if not store.exists(path):
        return None
    if overwrite:
        return None
    if not store.exists(path, "zarr.json"):
        if not store.is_empty(path):
            raise ValueError(f"{path} exists and is not a feature store; remove it, choose another --out, or --overwrite")
        return None
    attrs = store.read_attrs(path)
    version = attrs.get("format_version")
    if isinstance(version, int) and version < config.STORE_FORMAT_VERSION:
        return "rebuild"  # made by an older speechcls: unreadable by this one, so made again in full
    old = attrs.get("request")
    if old != request:
        diff = sorted(k for k in set(old or {}) | set(request) if (old or {}).get(k) != request.get(k))
        raise ValueError(
            f"{path} holds a store made with other settings (differs in: {', '.join(diff)}); "
            "pass --overwrite to replace it or --out for a new store"
        )
    if attrs.get("complete") and not store.lost_chunks(path, store.open_group(path, mode="r")):
        return "present"
    if attrs.get("engine") != engine:
        raise ValueError(
            f"{path} was made with {attrs.get('engine')}, not {engine}: finish or repair it with the same --backend "
            "and --device (resumed stores must be byte-identical), or --overwrite"
        )
    return "repair" if attrs.get("complete") else "resume"


def featurize(
    params: FeatureParams,
    root: str | Path | None = None,
    version: str = config.DEFAULT_VERSION,
    out: str | Path | None = None,
    backend: str = "auto",
    device: str = "auto",
    batch_size: int = config.BATCH_SIZE,
    chunk_rows: int | None = None,
    codec: str = store.DEFAULT_CODEC,
    overwrite: bool = False,
    row_seed: int = config.ROW_ORDER_SEED,
    workers: int | None = None,
    on_start: Callable[[int, int], None] = lambda total, done: None,
    on_block: Callable[[int], None] = lambda n: None,
) -> FeaturizeResult:
    """Featurize the tree at `root` into the store at `out` (default cache/<dataset>/<variant>-<hash>.zarr).

    A complete store with the same settings is left as it is; an incomplete one is resumed; one with
    other settings is an error unless `overwrite`. Unreadable clips are skipped and recorded.
    """
    params.validate()
    if batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {batch_size}")
    store.make_codec(codec)  # refuse a bad codec name before any work
    from speechcls.features import resolve_device

    device = resolve_device(device)
    backend = resolve_backend(backend, params, device)
    from speechcls import dist

    rank = dist.init(device)
    if not rank.main:
        dist.barrier(rank)  # rank 0 alone downloads a missing tree
    root = resolve_root(root, version)
    if rank.main:
        dist.barrier(rank)
    index = index_tree(root)
    perm, rows = row_arrays(index, row_seed)
    chunk_rows = chunk_rows or store.default_chunk_rows(params)
    layout = store.Layout(len(perm), chunk_rows, -(-batch_size // chunk_rows) * chunk_rows)
    path = store.where(out) if out is not None else store.default_store_path(index.name, params)
    request = {
        "format_version": config.STORE_FORMAT_VERSION,
        "params": params.describing(),
        "rows": store.rows_digest(list(rows["path"]), rows["label"]),
        "row_order_seed": row_seed,
        "n": len(perm),
        "codec": codec,
        "chunk_rows": chunk_rows,
    }
    engine = {"backend": backend, "device": device}
    # rank 0 alone decides (and creates the store); every rank gets its verdict, errors included,
    # so no rank waits at a barrier for a store that will never come
    try:
        status = _existing(path, request, engine, overwrite) if rank.main else None
    except ValueError as e:
        status = e
    status = dist.broadcast(rank, status)
    if isinstance(status, ValueError):
        raise status
    if status == "present":
        return _result(path, "present", store.store_info(path), 0.0, 0, backend, device)

    try:
        if not rank.main:
            dist.barrier(rank)  # rank 0 has made or checked the store
            writer = store.StoreWriter.reopen(path)
        elif status in ("resume", "repair"):
            writer = store.StoreWriter.reopen(path)
            # blocks that lost a chunk are redone with the missing ones (a finished block may have lost
            # one too, in a copy), nothing else
            writer.reopen_damaged(rows)
            dist.barrier(rank)
        else:
            attrs = _store_attrs(params, index, version, root, row_seed, engine)
            writer = store.StoreWriter.create(path, params, request, rows, layout, codec, attrs)
            dist.barrier(rank)  # the store exists: the others may open it
        layout = writer.layout
        device = dist.local_device(device, rank)
        result = _run(writer, layout, index.root, rows["path"], params, backend, device, workers, on_start, on_block, rank)
    except OSError as e:
        raise ValueError(
            f"cannot write the store at {path}: {e.strerror or e}. Free space or choose another --out; the store "
            "is not marked complete and the same command resumes it"
        ) from e
    result.status = {"resume": "resumed", "repair": "repaired", "rebuild": "rebuilt"}.get(status, "written")
    return result


def _result(path: store.Where, status: str, info: dict, seconds: float, computed: int, backend: str, device: str) -> FeaturizeResult:
    return FeaturizeResult(
        path, status, info["shape"][0], info["skipped"], info["resampled"], seconds, computed,
        info["bytes_on_disk"], info["compression_ratio"], backend, device,
    )  # fmt: skip


def _store_attrs(params: FeatureParams, index: DatasetIndex, version: str, root, row_seed: int, engine: dict) -> dict:
    """What a new store records about itself, besides its layout."""
    from speechcls.features import empty_mel_filters

    empty = empty_mel_filters(params)
    return {
        "variant": params.variant,
        "params": params.describing(),
        "sample_rate": params.sample_rate,
        "clip_samples": params.clip_samples,
        "classes": index.classes,
        "dataset": {
            "name": index.name,
            "version": version if index.name == config.release(version).name else None,
            "source_root": str(Path(root).resolve()),
            "official_split": index.official is not None,
            "missing_list_entries": index.missing,
        },
        "row_order_seed": row_seed,
        "engine": engine,
        "packages": store.package_versions(),
        "command": " ".join(["speechcls", *map(shlex.quote, sys.argv[1:])]) if _from_cli() else None,
        "notes": (
            [f"{empty} of {params.n_mels} mel filters are all zero at n_fft {params.n_fft} (torchaudio warns); "
             "expected with the chapter's settings"] if empty else []
        ),  # fmt: skip
    }


def _from_cli() -> bool:
    return Path(sys.argv[0]).name in ("speechcls", "__main__.py")


def _run(writer, layout, root, paths, params, backend, device, workers, on_start, on_block, rank) -> FeaturizeResult:
    """Featurize the blocks not yet done that belong to this rank (contiguous ranges of blocks, so
    ranks write disjoint chunk files); rank 0 marks the store complete once every rank is through."""
    import torch

    from speechcls import decode, dist
    from speechcls.features import FeatureExtractor

    mine = [b for b in range(layout.n_blocks) if b * rank.world // layout.n_blocks == rank.rank]
    todo = sorted(set(writer.todo()) & set(mine))
    size = lambda blocks: sum(layout.block(b).stop - layout.block(b).start for b in blocks)  # noqa: E731
    on_start(size(mine), size(mine) - size(todo))
    workers = workers or os.cpu_count() or 1
    extractor = FeatureExtractor(params).to(device)
    out_dtype = torch.float16 if params.store_dtype == "float16" else None
    transform = None  # DALI serves the power variants; complex and waveform always go through torch
    if backend == "dali":
        from speechcls import dali

        if params.variant in dali.DALI_VARIANTS:
            transform = dali.DaliEngine(params, batch_size=layout.block_rows, workers=workers).transform

    def decode_block(rels, pool):  # soundfile for both backends: the same skip rules and resampler
        return decode.decode_batch(root, rels, params.sample_rate, params.clip_samples, pool)

    t0 = time.perf_counter()
    computed = 0
    with ThreadPoolExecutor(workers) as pool, ThreadPoolExecutor(1) as ahead:
        pending = None
        for k, b in enumerate(todo):
            rels = list(paths[layout.block(b)])
            batch = pending.result() if pending is not None else decode_block(rels, pool)
            if k + 1 < len(todo):  # decode the next block while this one is transformed and written
                pending = ahead.submit(decode_block, list(paths[layout.block(todo[k + 1])]), pool)
            if transform is not None:
                feats = transform(batch.wave)
            else:
                with torch.inference_mode():
                    x = torch.from_numpy(batch.wave).to(device, non_blocking=True)
                    y = extractor(x)  # (B, C, F, T) or (B, 1, L) int16
                    if out_dtype is not None:
                        y = y.to(out_dtype)  # cast on the device: half the bytes to copy back
                    feats = y.cpu().numpy()  # note: a sync point; the next block is decoding meanwhile
            if out_dtype is not None and feats.dtype != np.float16:
                feats = feats.astype(np.float16)
            writer.write_block(b, feats, batch.valid, batch.skipped, batch.resampled, rels)
            computed += len(rels)
            on_block(len(rels))
    seconds = time.perf_counter() - t0
    dist.barrier(rank)  # every rank's blocks are on disk
    store_root = writer.loc
    info = store.store_info(store_root)
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
    return _result(store_root, "written", info, seconds, computed, backend, device)
