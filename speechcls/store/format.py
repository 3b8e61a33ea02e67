"""The store's format: its version, the attributes a store records, codecs, how rows are ordered and
cut into chunks and blocks (the sizes of a cut, and what they cost in memory: layout.py). Writer and
reader both follow these two modules; nothing else knows the layout.

Layout (N = every indexed clip, rows in a seeded shuffled order so each chunk mixes classes)::

    features  (N, C, F, T) float32|float16   ((N, 1, L) int16 for waveform), chunked along N only
    valid     (N,) bool       the clip was decoded (false: skipped, its row stays zero-filled); the array
                              keeps its format-3 name, in code the flag is called `decoded`
    label     (N,) int64      index into attrs["classes"]
    split     (N,) int8       official split: 0 train, 1 validation, 2 test (-1: the tree has no lists)
    speaker   (N,) str
    path      (N,) str        relative to the source root
    skip_reason (N,) str      why a clip was skipped ("" for a decoded row), chunked like features
    audio_crc32c (N,) int64   CRC-32C of the file's bytes (-1: unreadable), chunked like features:
                              `speechcls verify --root` re-hashes the audio against it
    done      (B,) bool       block b (a run of whole chunks) is written; one object per block
    resampled (B,) int32      clips of block b that were resampled; one object per block
    chunk_crc32c (B, K) int64 b, then the CRC-32C ending each chunk object block b wrote, slot by slot
                              (block_slots); one object per block

Every chunk is an object, all-zero ones included (zarr's write_empty_chunks, off by default, is turned
on for every array): zarr reads a missing chunk as its fill value, so without this a chunk lost in a
partial copy or deleted during training would silently read as zeros (or as label 0).

Every chunk ends with a CRC-32C of its stored bytes (zarr v3's crc32c codec, last in every array's
codec chain): a flipped bit, a truncated object or a foreign file in its place fails the check on read
(DamagedStore naming the chunk), and featurize recomputes it like a lost one. A checksum is tied to its
object, not to its place: so each block also records the CRC-32C of every chunk object it wrote, by
slot (`chunk_crc32c`), and creation those of the records it wrote (attribute `records_crc32c`); a chunk
moved or swapped to another key no longer matches the record of its place. Creation records a digest
of every array's metadata document (`array_digests`), and every attribute is digested (`attr_digests`,
rewritten with each attribute write): an edited dtype, codec chain or class list is found on open. A
store of this format without these records is damaged, never trusted. The request holds a fingerprint of
the tree (every clip's path, size and mtime; the lists' bytes), so featurize notices a tree that
changed since.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.config import FeatureParams
from speechcls.store.location import Location, join, to_location

# bump on any change of layout; readers refuse another version (3: every chunk written; 4: every chunk
# checksummed, attributes digested, the tree fingerprinted; 5: every chunk's place and every array's
# metadata recorded, every attribute digested). An older store is rebuilt by its featurize command: its
# array data are byte for byte those of format 5 (the records are new objects and attributes)
FORMAT_VERSION = 5
# Format 4 stores still read (the same arrays, fewer records): a long featurize is not lost to the bump.
# What format 5 adds cannot be proven for them, so `speechcls verify` reports one unproven, and featurize
# rebuilds it as format 5; what format 4 recorded (checksums, its attribute digests) is checked as before.
READABLE_VERSIONS = (4, FORMAT_VERSION)

# Chosen by benchmarks/store_codecs.py on the 300 real clips (benchmarks/results/store_codecs-cpu2.md):
# real speech's spectra barely compress (1.06x to 1.2x whatever the codec); blosc lz4 after a bit
# shuffle gets within a few percent of the best zstd ratio while writing 800-1,150 MB/s and reading
# 2.3-3.8 GB/s on 2 cores, 1.5-3x zstd's speeds: featurize and streaming are not held up by the codec.
DEFAULT_CODEC = "blosc-lz4-5-bitshuffle"
# ... except float32 spectra (spectrogram, mel, complex), stored raw: on real speech they compress 1.14x,
# 1.16x and 1.11x, and blosc costs more than it saves. Writing: ~80 / 55 / 140 us of a core per clip
# (benchmarks/featurize.py's encode stage; complex: 0.78 CPU s for 4,020 clips with blosc, 0.21 s raw); a
# whole featurize on 2 cores, blosc -> raw, median of 5 alternating runs: spectrogram 1.10 -> 0.99 s
# (torch), 1.07 -> 0.90 s (DALI); mel 1.31 -> 1.12 s, 1.02 -> 0.96 s. Reading: 2.8 -> 8.2 GB/s
# (spectrogram), 2.7 -> 7.5 GB/s (mel). Waveform int16 (1.53x) and float16 spectra (1.96x) keep blosc.
RAW_VARIANTS = ("spectrogram", "mel", "complex")


def default_codec(variant: str, dtype: str = "float32") -> str:
    """The codec a store of `variant` with features of `dtype` gets when --codec is not given."""
    return "none" if variant in RAW_VARIANTS and dtype == "float32" else DEFAULT_CODEC


# every chunk is written, even one equal to the fill value: a missing chunk object is then damage
ARRAY_CONFIG = {"write_empty_chunks": True}

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}  # the int8 codes of the `split` array

# every array of a store: features and the per-row records (chunked like features), the per-block
# records (one chunk per block), the rows known before decoding (one chunk)
ARRAYS = (
    "features", "valid", "skip_reason", "audio_crc32c", "done", "resampled", "chunk_crc32c", "label", "split",
    "speaker", "path",
)  # fmt: skip
# the per-row records featurize writes at creation, one chunk each (their CRC-32Cs: attrs["records_crc32c"])
ROW_RECORDS = ("label", "split", "speaker", "path")
# the arrays chunked along rows that a block writes, in the order of its chunk_crc32c slots
BLOCK_ARRAYS = ("features", "valid", "skip_reason", "audio_crc32c")

# the attributes that say what the stored numbers are: every store of this format records their digests
PROTECTED_ATTRS = (
    "format_version", "variant", "params", "sample_rate", "clip_samples", "classes", "request", "codec",
    "chunk_rows", "block_rows", "row_order_seed", "engine", "dataset",
)  # fmt: skip
# ... and that a store records once created: without them its chunks' places and metadata are unproven
CREATED_ATTRS = ("array_digests", "records_crc32c")
# attributes not digested: the run's timings, which differ between runs that make identical stores, and the
# state flags, checked against the store itself (creation's arrays, the done flags and the listing)
UNDIGESTED = ("attr_digests", "seconds", "clips_per_s", "created", "complete")


# Every array names its dimensions (zarr v3's dimension_names), so labelled-array readers see one table
# of clips: `xarray.open_zarr(store, consolidated=False)` gives features (clip, channel, freq|mel, time)
# beside label, split, speaker, path, ... on `clip`, and the per-block records on `block`. Stores made
# before the names were recorded read the same in speechcls (the reader does not use them).
PER_BLOCK = ("done", "resampled", "chunk_crc32c")


def dimension_names(variant: str) -> dict[str, tuple[str, ...]]:
    """Each array's dimension names for a store of `variant`."""
    features = {"waveform": ("clip", "channel", "sample"), "mel": ("clip", "channel", "mel", "time")}.get(
        variant, ("clip", "channel", "freq", "time")
    )
    dims = {"features": features, "chunk_crc32c": ("block", "slot")}
    return {name: dims.get(name, ("block",) if name in PER_BLOCK else ("clip",)) for name in ARRAYS}


def arrays_of(version) -> tuple[str, ...]:
    """The arrays a store of format `version` holds (4: all but chunk_crc32c)."""
    return tuple(a for a in ARRAYS if a != "chunk_crc32c") if version == 4 else ARRAYS


def block_slots(b: int, chunks_per_block: int) -> list[tuple[str, int]]:
    """(array, chunk index) of each slot of block b's chunk_crc32c row: the chunks of BLOCK_ARRAYS in turn
    (chunks_per_block each, block_rows / chunk_rows), then the block's resampled count. The last block may
    have fewer chunks: its missing slots hold -1."""
    rows = [(name, b * chunks_per_block + k) for name in BLOCK_ARRAYS for k in range(chunks_per_block)]
    return [*rows, ("resampled", b)]


def stored_crc32c(data: bytes) -> int:
    """The CRC-32C a chunk object ends with (the crc32c codec's last 4 bytes, little endian)."""
    return int.from_bytes(data[-4:], "little")


class IncompleteStore(ValueError):
    """A store not (yet) marked complete: the featurize command that made it finishes it."""


class DamagedStore(IncompleteStore):
    """A store marked complete that lacks chunk objects (a partial copy, a deletion)."""


def checksummed(compressors: list) -> list:
    """`compressors` followed by zarr's crc32c codec: every chunk object ends with a CRC-32C of its bytes."""
    from zarr.codecs import Crc32cCodec

    return [*compressors, Crc32cCodec()]


def record_codecs() -> list:
    """The codecs of the small per-row and per-block records: zarr's default zstd, checksummed."""
    from zarr.codecs import ZstdCodec

    return checksummed([ZstdCodec()])


def chunk_checksum_ok(data: bytes) -> bool:
    """The crc32c codec's check on a chunk object's stored bytes: the last 4 bytes are the little-endian
    CRC-32C of the rest (the object need not be decompressed to be verified)."""
    import google_crc32c

    return len(data) >= 4 and google_crc32c.value(data[:-4]).to_bytes(4, "little") == data[-4:]


def attr_digests(attrs: dict) -> dict[str, str]:
    """A digest of every attribute but UNDIGESTED, recorded beside them (rewritten with every attribute write)."""
    return {k: digest(v) for k, v in sorted(attrs.items()) if k not in UNDIGESTED}


def attr_problems(attrs: dict) -> dict[str, list[str]]:
    """{"edited": [...], "added": [...], "unrecorded": [...]}: attributes whose value no longer matches its
    digest (or that were removed), attributes featurize did not write, and the attributes every store of
    this format records (PROTECTED_ATTRS, and CREATED_ATTRS once created) that have no digest. Empty lists
    for an intact store."""
    recorded = attrs.get("attr_digests")
    recorded = recorded if isinstance(recorded, dict) else {}
    if attrs.get("format_version") == 4:  # digests of the protected attributes only, written at creation
        recorded = {k: d for k, d in recorded.items() if k in PROTECTED_ATTRS}
        edited = sorted(k for k, d in recorded.items() if k not in attrs or digest(attrs[k]) != d)
        unrecorded = [k for k in PROTECTED_ATTRS if k in attrs and k not in recorded]
        return {"edited": edited, "added": [], "unrecorded": unrecorded}
    required = PROTECTED_ATTRS + (CREATED_ATTRS if attrs.get("created") else ())
    return {
        "edited": sorted(k for k, d in recorded.items() if k not in attrs or digest(attrs[k]) != d),
        "added": sorted(k for k in attrs if k not in recorded and k not in UNDIGESTED),
        "unrecorded": [k for k in required if k not in recorded],
    }


def digest(value) -> str:
    """16 hex digits of the SHA-256 of `value` as JSON with sorted keys (Python's json.dumps, its default
    separators and ASCII escapes): the digest of an attribute and of an array's metadata document."""
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def tree_fingerprint(index) -> str:
    """What can change cheaply in a tree: every clip's relative path, size and mtime, and the bytes of
    its validation / testing lists. A copy that keeps mtimes (cp -p, rsync -a) keeps the fingerprint."""
    from speechcls import config as c

    h, root = hashlib.sha1(), os.fspath(index.root)
    for clip in index.clips:
        st = os.stat(os.path.join(root, clip.path))  # not Path.stat: 64,727 Path objects cost ~0.5 s
        h.update(f"{clip.path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    for name in (c.VALIDATION_LIST, c.TESTING_LIST):
        path = index.root / name
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\0")
    if getattr(index, "manifest", None) is not None:  # its labels, splits and speakers (a tree's: unchanged)
        h.update(b"manifest\0" + index.manifest.read_bytes() + b"\0")
    return h.hexdigest()


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
    raise ValueError(
        f"bad codec {spec!r}: use none, zstd-<level> or blosc-<lz4|zstd|blosclz>-<level>-<shuffle|bitshuffle|none>"
    )


def default_location(dataset: str, params: FeatureParams) -> Location:
    """cache/<dataset>/<variant>-<hash>.zarr: where `speechcls train` looks."""
    return join(to_location(config.cache_dir()), dataset, f"{params.variant}-{params.key()}.zarr")


def row_arrays(index, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The seeded row order of a tree's index (row r holds clip perm[r]) and the per-row arrays known
    before decoding: label, split, speaker, path."""
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


def rows_digest(paths: list[str], labels: np.ndarray) -> str:
    """Fingerprint of what the rows hold, so a changed tree never silently reuses a store."""
    h = hashlib.sha1()
    for p, y in zip(paths, labels.tolist()):
        h.update(f"{p}\t{y}\n".encode())
    return h.hexdigest()


def request(
    params: FeatureParams, rows: dict[str, np.ndarray], row_seed: int, codec: str, chunk_rows: int, tree: str
) -> dict:
    """The settings that define a store's numbers, and the tree's fingerprint: a store is reused only for
    an equal request."""
    return {
        "tree": tree,
        "format_version": FORMAT_VERSION,
        "params": params.describing(),
        "rows": rows_digest(list(rows["path"]), rows["label"]),
        "row_order_seed": row_seed,
        "n": len(rows["path"]),
        "codec": codec,
        "chunk_rows": chunk_rows,
    }


def new_attrs(params: FeatureParams, index, version: str, root, row_seed: int, engine: dict) -> dict:
    """What a new store records about itself, besides its layout."""
    from speechcls.audio.features import empty_mel_filters
    from speechcls.runtime import package_versions

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
        }
        | ({"manifest": str(Path(index.manifest).resolve())} if getattr(index, "manifest", None) else {}),
        "row_order_seed": row_seed,
        "engine": engine,
        "packages": package_versions(),
        "command": " ".join(["speechcls", *map(shlex.quote, sys.argv[1:])]) if _from_cli() else None,
        "notes": (
            [
                f"{empty} of {params.n_mels} mel filters are all zero at n_fft {params.n_fft} (torchaudio warns); "
                "expected with the chapter's settings"
            ]
            if empty
            else []
        ),  # fmt: skip
    }


def _from_cli() -> bool:
    """Run as `speechcls ...` or `python -m speechcls ...` (not inside another program, e.g. pytest)."""
    argv0 = Path(sys.argv[0])
    return argv0.name == "speechcls" or (argv0.name == "__main__.py" and argv0.parent.name == "speechcls")


def params_from_attrs(attrs: dict) -> FeatureParams:
    """The FeatureParams of the stored items."""
    if attrs["variant"] == "waveform":
        return FeatureParams("waveform", sample_rate=attrs["sample_rate"], clip_samples=attrs["clip_samples"])
    return FeatureParams(**attrs["params"])


def rebuild_command(attrs: dict) -> str:
    """The featurize command that made (and finishes, repairs or rebuilds) the store."""
    return attrs.get("command") or "speechcls featurize ..."
