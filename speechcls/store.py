"""The feature store: one Zarr v3 group per (dataset, variant, parameters, dtype).

Layout (N = every indexed clip, rows in a seeded shuffled order so each chunk mixes classes)::

    features  (N, C, F, T) float32|float16   ((N, 1, L) int16 for waveform), chunked along N only
    valid     (N,) bool       false: the clip was skipped (its row stays, zero-filled)
    label     (N,) int64      index into attrs["classes"]
    split     (N,) int8       official split: 0 train, 1 validation, 2 test (-1: the tree has no lists)
    speaker   (N,) str
    path      (N,) str        relative to the source root
    skip_reason (N,) str      why a clip was skipped ("" for a valid row), chunked like features
    done      (B,) bool       block b (a run of whole chunks) is written; one file per block
    resampled (B,) int32      clips of block b that were resampled; one file per block

Writing and reading are separate objects. Crash safety: zarr's LocalStore writes every chunk and every
zarr.json through a temporary file and a rename; a block's `done` flag is written after its chunks, so a
killed run redoes exactly the blocks not marked done; `complete` is set last. Every per-block record is
a file of its own, so ranks of a distributed run writing disjoint blocks never write the same file.
Readers refuse an incomplete store or another format version.

Every chunk is an object, all-zero ones included (zarr's write_empty_chunks, off by default, is turned on
for every array): zarr reads a missing chunk as its fill value, so without this a chunk lost in a partial
copy or deleted during training would silently read as zeros (or as label 0). With it, a missing object
is damage, found by one listing when a store is opened (DamagedStore, naming the lost chunks) and by a
check on every all-zero chunk read; `speechcls featurize` with the same settings recomputes exactly the
blocks that lost something.

Where: a local path (zarr's LocalStore) or any fsspec URL (s3://, gs://, ...: zarr's FsspecStore, with
credentials from the usual environment, e.g. AWS_ACCESS_KEY_ID / AWS_ENDPOINT_URL for S3). Object
stores write every object whole, so the same crash rules hold there.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.config import FeatureParams

# Chosen by benchmarks/store_codecs.py on the 300 real clips (benchmarks/results/store_codecs-cpu2.md):
# real speech's spectra barely compress (1.06x to 1.2x whatever the codec); blosc lz4 after a bit
# shuffle gets within a few percent of the best zstd ratio while writing 800-1,150 MB/s and reading
# 2.3-3.8 GB/s on 2 cores, 1.5-3x zstd's speeds: featurize and streaming are not held up by the codec.
DEFAULT_CODEC = "blosc-lz4-5-bitshuffle"
DEFAULT_CHUNK_BYTES = 16 << 20  # ~16 MB of raw features per chunk: few files, whole-chunk reads stay cheap


# every chunk is written, even one equal to the fill value: a missing chunk object is then damage
ARRAY_CONFIG = {"write_empty_chunks": True}


class IncompleteStore(ValueError):
    pass


class DamagedStore(IncompleteStore):
    """A store marked complete that lacks chunk objects (a partial copy, a deletion)."""


# --- where a store lives ---------------------------------------------------------------------------
Where = Path | str  # a local Path, or an fsspec URL kept as a string (Path() would fold its "//")


def where(location: str | Path) -> Where:
    """A local Path for a plain path or a file:// URL (LocalStore: atomic renames); the URL itself for
    any other fsspec protocol."""
    text = str(location)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    return text if "://" in text else Path(text)


def _fs(url: str):
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError as e:  # e.g. gs:// without gcsfs
        raise ValueError(f"{url}: {e} (pip install speechcls[s3] or speechcls[gcs])") from e
    # fsspec caches listings per file-system instance; another process (a rank, a rerun) may have
    # written since, and a stale "absent" would make featurize start a store over
    fs.invalidate_cache()
    return fs, root


def join(loc: Where, *parts: str) -> Where:
    return loc.joinpath(*parts) if isinstance(loc, Path) else "/".join([loc.rstrip("/"), *parts])


def name(loc: Where) -> str:
    """The last part of the location without .zarr (runs are named after it)."""
    last = loc.name if isinstance(loc, Path) else loc.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".zarr")


def exists(loc: Where, member: str = "") -> bool:
    """The location (or a member file under it) exists."""
    if isinstance(loc, Path):
        target = loc / member if member else loc
        return target.is_file() if member else target.exists()
    fs, root = _fs(str(join(loc, member)) if member else loc)
    return fs.isfile(root) if member else fs.exists(root)


def is_empty(loc: Where) -> bool:
    if isinstance(loc, Path):
        return not any(loc.iterdir())
    fs, root = _fs(loc)
    return not fs.ls(root)


def remove(loc: Where) -> None:
    if isinstance(loc, Path):
        shutil.rmtree(loc)
    else:
        fs, root = _fs(loc)
        fs.rm(root, recursive=True)


def glob(loc: Where, pattern: str) -> list[Where]:
    """Members of `loc` matching `pattern`, as locations of the same kind, sorted."""
    if isinstance(loc, Path):
        return sorted(loc.glob(pattern))
    fs, root = _fs(loc)
    protocol = loc.split("://", 1)[0]
    return sorted(f"{protocol}://{m}" for m in fs.glob(f"{root.rstrip('/')}/{pattern}"))


def open_group(loc: Where, mode: str):
    import zarr

    if not isinstance(loc, Path):
        _fs(loc)  # a clear error for a protocol whose package is missing
    return zarr.open_group(str(loc), mode=mode)


def make_codec(spec: str):
    """Compressor list from a short name: "none", "zstd-<level>", "blosc-<cname>-<level>-<shuffle>"."""
    from zarr.codecs import BloscCodec, ZstdCodec

    parts = spec.split("-")
    try:
        if spec == "none":
            return []
        if parts[0] == "zstd" and len(parts) == 2:
            return [ZstdCodec(level=int(parts[1]))]
        if parts[0] == "blosc" and len(parts) == 4:
            return [BloscCodec(cname=parts[1], clevel=int(parts[2]), shuffle=parts[3].replace("none", "noshuffle"))]
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad codec {spec!r}: {e}") from e
    raise ValueError(f"bad codec {spec!r}: use none, zstd-<level> or blosc-<lz4|zstd|blosclz>-<level>-<shuffle|bitshuffle|none>")


def default_chunk_rows(params: FeatureParams) -> int:
    item = int(np.prod(params.shape)) * np.dtype(params.store_dtype).itemsize
    return int(max(16, min(1024, DEFAULT_CHUNK_BYTES // item)))


def default_store_path(dataset: str, params: FeatureParams) -> Where:
    """cache/<dataset>/<variant>-<hash>.zarr: where `speechcls train` looks."""
    return join(where(config.cache_dir()), dataset, f"{params.variant}-{params.key()}.zarr")


def rows_digest(paths: list[str], labels: np.ndarray) -> str:
    """Fingerprint of what the rows hold, so a changed tree never silently reuses a store."""
    h = hashlib.sha1()
    for p, y in zip(paths, labels.tolist()):
        h.update(f"{p}\t{y}\n".encode())
    return h.hexdigest()


def dir_bytes(path: str | Path) -> int:
    loc = where(path)
    if not isinstance(loc, Path):
        fs, root = _fs(loc)
        return int(fs.du(root)) if fs.exists(root) else 0
    return sum(p.stat().st_size for p in loc.rglob("*") if p.is_file())


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("speechcls", "torch", "torchaudio", "zarr", "numcodecs", "soundfile", "nvidia-dali-cuda130"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class Layout:
    """How the N rows are cut: chunks of the arrays, blocks of work (whole chunks)."""

    n: int
    chunk_rows: int
    block_rows: int

    @property
    def n_blocks(self) -> int:
        return -(-self.n // self.block_rows)

    def block(self, b: int) -> slice:
        return slice(b * self.block_rows, min((b + 1) * self.block_rows, self.n))


class StoreWriter:
    """Creates a store or reopens an unfinished one, writes blocks, marks it complete."""

    def __init__(self, loc: Where, group, layout: Layout):
        self.loc = loc
        self.group = group
        self.layout = layout
        self.features, self.valid, self.done, self.reasons, self.resampled = (
            group[k].with_config(ARRAY_CONFIG) for k in ("features", "valid", "done", "skip_reason", "resampled")
        )

    @classmethod
    def create(
        cls,
        path: Where,
        params: FeatureParams,
        request: dict,
        rows: dict[str, np.ndarray],
        layout: Layout,
        codec: str,
        attrs: dict,
    ) -> "StoreWriter":
        compressors = make_codec(codec)
        path = where(path)
        if exists(path):
            remove(path)
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        group = open_group(path, mode="w")
        n, blocks = layout.n, layout.n_blocks
        group.create_array(
            "features", shape=(n, *params.shape), chunks=(layout.chunk_rows, *params.shape),
            dtype=params.store_dtype, compressors=compressors, fill_value=0, config=ARRAY_CONFIG,
        )  # fmt: skip
        group.create_array("valid", shape=(n,), chunks=(layout.chunk_rows,), dtype="bool", fill_value=False, config=ARRAY_CONFIG)
        group.create_array("skip_reason", shape=(n,), chunks=(layout.chunk_rows,), dtype=str, config=ARRAY_CONFIG)
        group.create_array("done", shape=(blocks,), chunks=(1,), dtype="bool", fill_value=False, config=ARRAY_CONFIG)
        group.create_array("resampled", shape=(blocks,), chunks=(1,), dtype="int32", fill_value=0, config=ARRAY_CONFIG)
        for name, values in rows.items():  # label, split, speaker, path: known before any decoding
            write_rows(group, name, values, create=True)
        group.attrs.update(
            {
                **attrs,
                "format_version": config.STORE_FORMAT_VERSION,
                "request": request,
                "codec": codec,
                "chunk_rows": layout.chunk_rows,
                "block_rows": layout.block_rows,
                "complete": False,
            }
        )
        return cls(path, group, layout)

    @classmethod
    def reopen(cls, path: Where) -> "StoreWriter":
        path = where(path)
        group = open_group(path, mode="r+")
        n = group["features"].shape[0]
        return cls(path, group, Layout(n, group.attrs["chunk_rows"], group.attrs["block_rows"]))

    def todo(self) -> list[int]:
        """Blocks not yet written, in order."""
        return [int(b) for b in np.flatnonzero(~self.done[:])]

    def write_block(self, b: int, features: np.ndarray, valid: np.ndarray, skipped: dict[str, str], resampled: int, paths) -> None:
        rows = self.layout.block(b)
        features[~valid] = 0  # a skipped clip keeps its row, zero-filled
        self.features[rows] = features
        self.valid[rows] = valid
        self.reasons[rows] = np.array([skipped.get(p, "") for p in paths], dtype=str)
        self.resampled[b] = resampled
        # marked only once the block's chunks are on disk: a kill before this line redoes the block
        self.done[b] = True

    def reopen_damaged(self, rows: dict[str, np.ndarray]) -> None:
        """Turns a store that lost chunk objects into a resumable one: every block that lost a chunk is
        marked not done (a run then recomputes exactly those), lost row records are written again from
        the index."""
        lost = lost_chunks(self.loc, self.group)
        if not lost:
            return
        blocks = set()
        for name, chunks in lost.items():
            if name in ("done", "resampled"):  # one chunk per block
                blocks.update(chunks)
            elif name in rows:
                write_rows(self.group, name, rows[name])
            else:  # chunked along rows like features
                blocks.update(c * self.layout.chunk_rows // self.layout.block_rows for c in chunks)
        self.group.attrs["complete"] = False  # first: killed in between, the next run repairs again
        for b in sorted(blocks):
            self.done[b] = False

    def finish(self, extra: dict) -> None:
        if not self.done[:].all():
            raise AssertionError("finish() before every block was written")
        self.group.attrs.update(
            {**extra, "skipped": read_skipped(self.group), "resampled": int(self.resampled[:].sum()), "complete": True}
        )


def write_rows(group, name: str, values: np.ndarray, create: bool = False) -> None:
    """A per-row record known before any decoding (label, split, speaker, path): one chunk."""
    if create:
        dtype = values.dtype if values.dtype.kind != "U" else str
        group.create_array(name, shape=values.shape, chunks=(max(len(values), 1),), dtype=dtype, config=ARRAY_CONFIG)
    group[name].with_config(ARRAY_CONFIG)[:] = values


def members(loc: Where) -> list[str]:
    """Every object under the store, as keys relative to it ("features/c/3/0/0/0"): one listing."""
    if isinstance(loc, Path):
        return [p.relative_to(loc).as_posix() for p in loc.rglob("*") if p.is_file()]
    fs, root = _fs(loc)
    root = root.rstrip("/") + "/"
    return [k[len(root) :] for k in fs.find(root) if k.startswith(root)]


def lost_chunks(loc: Where, group) -> dict[str, list[int]]:
    """{array: [chunk index, ...]} of the chunk objects a written store should hold but lacks. Every
    array is chunked along rows only, so a chunk is named by its first index."""
    held: dict[str, set[int]] = {}
    for key in members(loc):
        parts = key.split("/")
        if len(parts) >= 3 and parts[1] == "c" and all(p.isdigit() for p in parts[2:]):
            held.setdefault(parts[0], set()).add(int(parts[2]))
    lost = {}
    for name, array in group.arrays():
        missing = sorted(set(range(array.nchunks)) - held.get(name, set()))
        if missing:
            lost[name] = missing
    return lost


def damage_message(loc: Where, group, lost: dict[str, list[int]]) -> str:
    what = ", ".join(f"{name}: {len(c)} of {group[name].nchunks}" for name, c in sorted(lost.items()))
    return (
        f"{loc}: the store is marked complete but lacks chunk objects ({what}): a partial copy, or files "
        "deleted? Copy it again, or run the featurize command again to recompute only the blocks that lost "
        f"something: {group.attrs.get('command') or 'speechcls featurize ...'}"
    )


def read_chunk(loc: Where, array, c: int) -> np.ndarray:
    """Chunk `c` (along rows) of `array`. zarr reads a missing chunk object as fill values; an all-zero
    chunk is therefore checked to exist (every chunk is written), so a deleted store is an error here,
    never a run on zeros."""
    rows = array.chunks[0]
    block = array[c * rows : min((c + 1) * rows, array.shape[0])]
    if not block.any():
        key = array.metadata.encode_chunk_key((c,) + (0,) * (array.ndim - 1))
        if not exists(loc, f"{array.basename}/{key}"):
            raise DamagedStore(
                f"{loc}: chunk {array.basename}/{key} is gone (the store was deleted or changed while it was "
                "being read?); run the featurize command again to recompute it"
            )
    return block


def read_skipped(group) -> dict[str, str]:
    """Relative path -> reason of every skipped clip, from the per-row records."""
    reasons = group["skip_reason"][:]
    paths = group["path"][:]
    return {str(paths[i]): str(reasons[i]) for i in np.flatnonzero(reasons != "")}


def read_attrs(path: Where) -> dict:
    return dict(open_group(where(path), mode="r").attrs)


def open_store(path: str | Path, require_complete: bool = True):
    """Open a store for reading: checks the format version and, by default, completeness."""
    path = where(path)
    if not exists(path, "zarr.json"):
        raise ValueError(f"{path}: not a speechcls feature store (no zarr.json); make one with `speechcls featurize`")
    group = open_group(path, mode="r")
    version = group.attrs.get("format_version")
    if version != config.STORE_FORMAT_VERSION:
        raise ValueError(
            f"{path}: store format version {version}, this speechcls reads version {config.STORE_FORMAT_VERSION}; "
            f"run its featurize command again (an older store is rebuilt): {group.attrs.get('command') or 'speechcls featurize ...'}"
        )
    if require_complete and not group.attrs.get("complete"):
        done = group["done"][:]
        raise IncompleteStore(
            f"{path}: the store is incomplete ({int(done.sum())} of {len(done)} blocks written); finish it by "
            f"running the same command again: {group.attrs.get('command') or 'speechcls featurize ...'}"
        )
    if require_complete and (lost := lost_chunks(path, group)):
        raise DamagedStore(damage_message(path, group, lost))
    return group


def store_info(path: str | Path) -> dict:
    """What `speechcls info STORE` prints."""
    path = where(path)
    group = open_store(path, require_complete=False)
    attrs = dict(group.attrs)
    feats = group["features"]
    valid = group["valid"][:]
    split = group["split"][:]
    on_disk = dir_bytes(join(path, "features"))
    raw = feats.nbytes
    per_split = {}
    for code, name in enumerate(config.SPLITS):
        per_split[name] = int(((split == code) & valid).sum())
    return {
        "path": str(path),
        "variant": attrs["params"]["variant"],
        "complete": attrs.get("complete", False),
        "shape": list(feats.shape),
        "dtype": str(feats.dtype),
        "chunks": list(feats.chunks),
        "codec": attrs["codec"],
        "bytes_on_disk": dir_bytes(path),
        "features_bytes_on_disk": on_disk,
        "compression_ratio": raw / on_disk if on_disk else float("nan"),
        "classes": attrs["classes"],
        "valid": int(valid.sum()),
        # chunk objects a complete store lacks ({array: [lost, of]}); an unfinished one lacks some by design
        "lost_chunks": {k: [len(c), group[k].nchunks] for k, c in lost_chunks(path, group).items()} if attrs.get("complete") else {},
        "per_split": per_split,
        "skipped": attrs["skipped"] if "skipped" in attrs else read_skipped(group),
        "resampled": attrs["resampled"] if "resampled" in attrs else int(group["resampled"][:].sum()),
        "params": attrs["params"],
        "dataset": attrs.get("dataset", {}),
    }
