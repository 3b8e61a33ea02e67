"""Reading stores: open (format version, completeness, lost chunks checked), find the one store in a
cache, the rows of a split, whole-chunk reads, what `speechcls info` shows."""

from __future__ import annotations

import numpy as np

from speechcls import config
from speechcls.store.format import (
    FORMAT_VERSION,
    SPLIT_CODES,
    DamagedStore,
    IncompleteStore,
    rebuild_command,
)
from speechcls.store.location import Location, dir_bytes, exists, glob, join, members, open_group, to_location


def lost_chunks(loc: Location, group) -> dict[str, list[int]]:
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


def damage_message(loc: Location, group, lost: dict[str, list[int]]) -> str:
    what = ", ".join(f"{name}: {len(c)} of {group[name].nchunks}" for name, c in sorted(lost.items()))
    return (
        f"{loc}: the store is marked complete but lacks chunk objects ({what}): a partial copy, or files "
        "deleted? Copy it again, or run the featurize command again to recompute only the blocks that lost "
        f"something: {rebuild_command(group.attrs)}"
    )


def read_attrs(loc: str | Location) -> dict:
    return dict(open_group(to_location(loc), mode="r").attrs)


def open_store(store: str | Location, require_complete: bool = True):
    """The zarr group of a store, for reading: checks the format version and, by default, completeness
    and that no chunk object is lost."""
    loc = to_location(store)
    if not exists(loc, "zarr.json"):
        raise ValueError(f"{loc}: not a speechcls feature store (no zarr.json); make one with `speechcls featurize`")
    group = open_group(loc, mode="r")
    version = group.attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{loc}: store format version {version}, this speechcls reads version {FORMAT_VERSION}; "
            f"run its featurize command again (an older store is rebuilt): {rebuild_command(group.attrs)}"
        )
    if require_complete and not group.attrs.get("complete"):
        done = group["done"][:]
        raise IncompleteStore(
            f"{loc}: the store is incomplete ({int(done.sum())} of {len(done)} blocks written); finish it by "
            f"running the same command again: {rebuild_command(group.attrs)}"
        )
    if require_complete and (lost := lost_chunks(loc, group)):
        raise DamagedStore(damage_message(loc, group, lost))
    return group


def find_store(variant: str | None = None, cache: Location | None = None) -> Location:
    """The one complete store under the cache (of `variant`, if given); an error naming the candidates."""
    cache = to_location(cache or config.cache_dir())
    found = []
    for loc in glob(cache, "*/*.zarr"):
        try:
            group = open_store(loc)
        except ValueError:
            continue  # not a store, incomplete or another format: not a candidate
        if variant is None or group.attrs["variant"] == variant:
            found.append(loc)
    if not found:
        what = f"{variant} store" if variant else "store"
        raise ValueError(f"no complete {what} under {cache}: run `speechcls featurize` first, or pass --store")
    if len(found) > 1:
        raise ValueError(
            "several complete stores under "
            + str(cache)
            + "; choose one with --store (or narrow with --variant):\n  "
            + "\n  ".join(map(str, found))
        )
    return found[0]


def split_rows(group, split: str, split_kind: str = "official", seed: int = config.SPLIT_SEED) -> np.ndarray:
    """Sorted rows of `split` (train | validation | test) that hold a decoded clip. `split_kind` random
    applies the one random-split function to the store's path array."""
    from speechcls.data.tree import random_split

    code = SPLIT_CODES.get("validation" if split == "valid" else split)  # "valid": the chapter's log name
    if code is None:
        raise ValueError(f"unknown split {split!r}: choose train, validation or test")
    decoded = group["valid"][:]
    if split_kind == "official":
        codes = group["split"][:]
        if (codes < 0).all():
            raise ValueError("this store's tree had no validation/testing lists: use --split-kind random")
    elif split_kind == "random":
        codes = random_split(list(group["path"][:]), seed)
    else:
        raise ValueError(f"unknown split kind {split_kind!r}: choose official or random")
    return np.flatnonzero(decoded & (codes == code))


def read_chunk(loc: Location, array, c: int) -> np.ndarray:
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


def read_rows(loc: Location, array, rows: np.ndarray) -> np.ndarray:
    """array[rows] for sorted rows, reading whole chunks (one read per chunk that holds any)."""
    chunk = array.chunks[0]
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    starts = np.searchsorted(rows, np.arange(0, array.shape[0] + chunk, chunk))
    for c in range(len(starts) - 1):
        a, b = starts[c], starts[c + 1]
        if a == b:
            continue
        out[a:b] = read_chunk(loc, array, c)[rows[a:b] - c * chunk]
    return out


def read_skipped(group) -> dict[str, str]:
    """Relative path -> reason of every skipped clip, from the per-row records."""
    reasons = group["skip_reason"][:]
    paths = group["path"][:]
    return {str(paths[i]): str(reasons[i]) for i in np.flatnonzero(reasons != "")}


def store_info(store: str | Location) -> dict:
    """What `speechcls info STORE` prints."""
    loc = to_location(store)
    group = open_store(loc, require_complete=False)
    attrs = dict(group.attrs)
    feats = group["features"]
    decoded = group["valid"][:]
    split = group["split"][:]
    on_disk = dir_bytes(join(loc, "features"))
    per_split = {name: int(((split == code) & decoded).sum()) for name, code in SPLIT_CODES.items()}
    return {
        "path": str(loc),
        "variant": attrs["params"]["variant"],
        "complete": attrs.get("complete", False),
        "shape": list(feats.shape),
        "dtype": str(feats.dtype),
        "chunks": list(feats.chunks),
        "codec": attrs["codec"],
        "bytes_on_disk": dir_bytes(loc),
        "features_bytes_on_disk": on_disk,
        "compression_ratio": feats.nbytes / on_disk if on_disk else float("nan"),
        "classes": attrs["classes"],
        "decoded": int(decoded.sum()),
        # chunk objects a complete store lacks ({array: [lost, of]}); an unfinished one lacks some by design
        "lost_chunks": {k: [len(c), group[k].nchunks] for k, c in lost_chunks(loc, group).items()}
        if attrs.get("complete")
        else {},
        "per_split": per_split,
        "skipped": attrs["skipped"] if "skipped" in attrs else read_skipped(group),
        "resampled": attrs["resampled"] if "resampled" in attrs else int(group["resampled"][:].sum()),
        "params": attrs["params"],
        "dataset": attrs.get("dataset", {}),
    }
