"""Featurize a tree into a store: resolve the backend, the tree and the codec; under the store's lock
decide what to do with the location (store/guard.py's plan), open the writer, run the pipeline
(stages.py), complete the store and report it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from speechcls import config, dist
from speechcls.config import FeatureParams
from speechcls.data.tree import DatasetIndex, index_tree
from speechcls.featurize.profile import Profile, default_workers
from speechcls.featurize.stages import _Pipeline
from speechcls.runtime import Progress, resolve_device
from speechcls.store import format as fmt
from speechcls.store import layout as layout_of
from speechcls.store.guard import cannot_write, lock, plan
from speechcls.store.location import Location, to_location
from speechcls.store.reader import read_attrs, store_info
from speechcls.store.writer import StoreWriter


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
    # manifest rows left out before decoding (an absent file, a clip too short or too long): path -> reason
    left_out: dict[str, str] | None = None

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
        # torch: on the CPU its spectra go into the block's rows (audio/spectra.py), and at Speech Commands'
        # size (`python benchmarks/featurize.py --full --dtypes float32,float16`, 2 cores) it featurized
        # spectrogram at 2,973 clips/s against DALI's 2,501 and mel at 2,770 against 2,863; with float16
        # stores DALI fell to 498 and 856 (its features spend the run waiting on blosc's encoding, whatever
        # slows it there). With CUDA, torch's batched STFT on the GPU is the fast path.
        return "torch"
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


def read_source(root: str | Path | None, manifest: str | Path | None, version: str) -> DatasetIndex:
    """The index of what featurize reads: the manifest (data/manifest.py) where given, else the tree
    (resolve_root). Both is refused: one source a store."""
    if manifest is not None:
        if root is not None:
            raise ValueError(
                f"--root {root} and --manifest {manifest}: a store is made from one source; the manifest's paths are "
                "relative to its own folder, so leave --root out"
            )
        from speechcls.data.manifest import read_manifest

        return read_manifest(manifest)
    return index_tree(resolve_root(root, version))


def refuse_manifest_folder(loc: Location, index: DatasetIndex) -> None:
    """A store that is, or holds, the manifest's folder: --overwrite would delete the audio. (A store inside
    the folder is fine: a manifest lists its clips, nothing globs the folder.)"""
    if not isinstance(loc, Path):
        return
    at, folder = loc.resolve(), index.root.resolve()
    if at == folder or at in folder.parents:
        raise ValueError(
            f"--out {loc} is or holds the folder of the manifest {index.manifest} ({folder}), where its audio is; "
            "choose another --out"
        )


def codec_for(loc: Location, params: FeatureParams, overwrite: bool) -> str:
    """The codec when --codec is not given: the one of a store already at `loc` (so a store made with an
    earlier default is found present, resumed or repaired, not "made with other settings"), else the
    variant's default (format.default_codec); with `overwrite`, the default."""
    from speechcls.store.guard import store_attrs

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
    manifest: str | Path | None = None,
) -> FeaturizeResult:
    """Featurize the tree at `root`, or the clips a `manifest` lists (data/manifest.py), into the store at
    `out` (default cache/<dataset>/<variant>-<hash>.zarr; a manifest's dataset is its file name).

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
    index = read_source(root, manifest, version)  # rank 0 first: it downloads a missing tree
    if rank.main:
        dist.barrier(rank)
    root = index.root
    tree = None if index.manifest is not None else root  # a manifest's folder is no tree: a store may lie inside
    _, rows = fmt.row_arrays(index, row_seed)
    chunk_rows = chunk_rows or layout_of.default_chunk_rows(params)
    layout = layout_of.Layout(len(index.clips), chunk_rows, -(-batch_size // chunk_rows) * chunk_rows)
    layout_of.check_layout(params, layout, batch_size)  # before the pipeline, the lock and the store
    loc = to_location(out) if out is not None else fmt.default_location(index.name, params)
    if tree is None:
        refuse_manifest_folder(loc, index)
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
        with _lock(rank, loc, tree):  # one featurize at a time writes a local store
            # rank 0 alone decides what to do with the location (store/guard.py's plan; never the tree), every
            # rank gets its verdict, errors included, so no rank waits at a barrier for a store that never comes
            status = dist.from_main(rank, lambda: plan(loc, request, engine, overwrite, tree=tree))
            if status == "present":
                present = FeaturizeResult.of(loc, "present")
                present.left_out = index.unusable  # a manifest's bad rows, a tree's links and folders named .wav
                return present

            def create() -> StoreWriter:
                attrs = fmt.new_attrs(params, index, version, root, row_seed, engine)
                return StoreWriter.create(loc, params, request, rows, layout, codec, attrs)

            try:
                writer = _open_writer(rank, status, loc, rows, create)
                computed, opened_s, read_s = pipeline.run(writer, progress)
                profile = pipeline.profile(computed, setup_s, opened_s, read_s)
                summary = _finish(writer, rank, computed, time.perf_counter() - t_start)
            except OSError as e:
                raise cannot_write(loc, e, "; the store is not marked complete and the same command resumes it") from e
    progress.end()
    if summary is None:  # a rank other than 0: the store as rank 0 completed it
        result = FeaturizeResult.of(loc, "written", 0.0, computed)
    else:
        result = FeaturizeResult(loc, "written", seconds=0.0, computed=computed, **summary)
    result.seconds = time.perf_counter() - t_start
    profile.finish_s = result.seconds - setup_s - profile.pipeline_s
    result.profile = profile
    result.status = {"resume": "resumed", "repair": "repaired", "rebuild": "rebuilt"}.get(status, "written")
    result.left_out = index.unusable
    return result


def _lock(rank, loc: Location, root: Path | None):
    """Rank 0 holds the store's lock (store/guard.py) while it decides and writes. Not taken for a location
    that is, holds or lies inside the tree: plan() refuses those, and no lock file goes into a tree
    (`root` None: a manifest's, no tree)."""
    if not rank.main or not isinstance(loc, Path):
        return contextlib.nullcontext()
    if root is None:
        return lock(loc)
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
