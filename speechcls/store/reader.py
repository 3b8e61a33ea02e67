"""Reading stores: open (format version, completeness, lost chunks checked), find the one store in a
cache, the rows of a split, whole-chunk reads, what `speechcls info` shows."""

from __future__ import annotations

import numpy as np

from speechcls import config
from speechcls.store.format import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    SPLIT_CODES,
    DamagedStore,
    IncompleteStore,
    rebuild_command,
)
from speechcls.store.location import (
    Location,
    dir_bytes,
    exists,
    glob,
    join,
    open_group,
    to_location,
)
from speechcls.store.proof import check_objects, chunk_objects, damage_message, lost_chunks, structure_damage


def open_group_checked(loc: Location):
    """The store's group for reading; a group zarr.json that cannot be parsed (a flipped byte, a partial
    copy) is a DamagedStore naming the file, not the JSON parser's error."""
    try:
        return open_group(loc, mode="r")
    except ValueError as e:  # json.JSONDecodeError, zarr's metadata errors
        raise DamagedStore(
            f"{loc}: the store's zarr.json cannot be read ({type(e).__name__}: damaged, a flipped byte, a partial "
            "copy?), so its attributes are lost; make it anew with its featurize command and --overwrite"
        ) from None


def read_attrs(loc: str | Location) -> dict:
    return dict(open_group_checked(to_location(loc)).attrs)


def open_store(store: str | Location, require_complete: bool = True):
    """The zarr group of a store, for reading: checks the format version and, by default, completeness
    and that no chunk object is lost."""
    loc = to_location(store)
    if not exists(loc, "zarr.json"):
        raise ValueError(f"{loc}: not a speechcls feature store (no zarr.json); make one with `speechcls featurize`")
    group = open_group_checked(loc)
    version = group.attrs.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{loc}: store format version {version}, this speechcls reads version {FORMAT_VERSION}; "
            f"run its featurize command again (an older store is rebuilt): {rebuild_command(group.attrs)}"
        )
    if not group.attrs.get("created"):
        raise IncompleteStore(
            f"{loc}: the store's creation was interrupted (or is under way); run the same command again to make "
            f"it: {rebuild_command(group.attrs)}"
        )
    if problem := structure_damage(loc, group):
        raise DamagedStore(problem)
    if require_complete and not group.attrs.get("complete"):
        done = read_all(group, "done")
        raise IncompleteStore(
            f"{loc}: the store is incomplete ({int(done.sum())} of {len(done)} blocks written); finish it by "
            f"running the same command again: {rebuild_command(group.attrs)}"
        )
    # a listing, not a read of every chunk: the readers verify each chunk's checksum as they decode it
    if require_complete and (lost := lost_chunks(loc, group, checksums=False)):
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
    decoded = read_all(group, "valid")
    if split_kind == "official":
        codes = read_all(group, "split")
        if (codes < 0).all():
            raise ValueError("this store's tree had no validation/testing lists: use --split-kind random")
    elif split_kind == "random":
        codes = random_split(list(read_all(group, "path")), seed)
    else:
        raise ValueError(f"unknown split kind {split_kind!r}: choose official or random")
    return np.flatnonzero(decoded & (codes == code))


def read_all(group, name: str) -> np.ndarray:
    """A whole array of the store (the per-row and per-block records): a chunk that fails its checksum
    is a DamagedStore naming the array, not a codec traceback."""
    try:
        return group[name][:]
    except Exception as e:
        raise DamagedStore(
            f"{getattr(group.store, 'root', None) or group.store_path}: the {name} array fails its checksum or "
            f"cannot be decoded ({type(e).__name__}): "
            "the store was damaged; run its featurize command again to recompute it (`speechcls verify` lists all)"
        ) from None


def read_chunk(loc: Location, array, c: int) -> np.ndarray:
    """Chunk `c` (along rows) of `array`. Its CRC-32C is checked as zarr decodes it; zarr reads a missing
    chunk object as fill values, so an all-zero chunk is checked to exist (every chunk is written): a
    damaged or deleted store is an error here, never a run on wrong numbers or zeros."""
    rows = array.chunks[0]
    try:
        block = array[c * rows : min((c + 1) * rows, array.shape[0])]
    except Exception as e:  # ValueError (checksum mismatch), or the codec's own error on foreign bytes
        key = array.metadata.encode_chunk_key((c,) + (0,) * (array.ndim - 1))
        raise DamagedStore(
            f"{loc}: chunk {array.basename}/{key} fails its checksum or cannot be decoded ({type(e).__name__}): the "
            "store was damaged; run the featurize command again to recompute it (`speechcls verify` lists all)"
        ) from None
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
    reasons = read_all(group, "skip_reason")
    paths = read_all(group, "path")
    return {str(paths[i]): str(reasons[i]) for i in np.flatnonzero(reasons != "")}


def store_info(store: str | Location) -> dict:
    """What `speechcls info STORE` prints."""
    loc = to_location(store)
    group = open_store(loc, require_complete=False)
    attrs = dict(group.attrs)
    feats = group["features"]
    decoded = read_all(group, "valid")
    split = read_all(group, "split")
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
        "lost_chunks": {k: [len(c), group[k].nchunks] for k, c in lost_chunks(loc, group, checksums=False).items()}
        if attrs.get("complete")
        else {},
        "per_split": per_split,
        "skipped": attrs["skipped"] if "skipped" in attrs else read_skipped(group),
        "resampled": attrs["resampled"] if "resampled" in attrs else int(read_all(group, "resampled").sum()),
        "params": attrs["params"],
        "dataset": attrs.get("dataset", {}),
    }


def verify(store: str | Location, root: str | None = None, manifest: str | None = None) -> dict:
    """`speechcls verify`: read every chunk object's bytes and check its CRC-32C and that it is the object
    recorded for its place, check every array's metadata and every attribute against their digests, and
    with `root` (or `manifest`) check that the tree (or the manifest and the clips it lists) is the one the
    store was made from. Returns {"problems": [one line
    each], "chunks": objects checked, "bytes": bytes read}; no problem means the store reads back exactly
    as featurize wrote it (and the tree is unchanged)."""

    loc = to_location(store)
    if not exists(loc, "zarr.json"):
        raise ValueError(f"{loc}: not a speechcls feature store (no zarr.json)")
    group = open_group_checked(loc)
    attrs = dict(group.attrs)
    problems = []
    version = attrs.get("format_version")
    if version not in READABLE_VERSIONS:
        return {"problems": [f"format version {version}, not {FORMAT_VERSION}: "
                             "this speechcls cannot verify it; rebuild it with its featurize command"],
                "chunks": 0, "bytes": 0}  # fmt: skip
    unproven = version != FORMAT_VERSION
    if unproven:
        problems.append(
            f"format version {version}: its chunks' checksums and attributes are checked, but a format-{version} "
            "store records neither its chunks' places nor its arrays' metadata, so verify cannot prove them; run "
            f"its featurize command to rebuild it as format {FORMAT_VERSION}: {rebuild_command(attrs)}"
        )
    structure = structure_damage(loc, group)
    if structure:
        problems.append(structure.removeprefix(f"{loc}: "))  # the CLI prints the store before each problem
    if not attrs.get("complete"):
        problems.append("the store is not complete: run its featurize command again to finish it")
    held = chunk_objects(loc)  # one listing: read and checked here, then the missing ones counted
    failed, misplaced, checked, nbytes = check_objects(loc, group, held)
    for found, what in ((failed, "fail their checksum"),
                        (misplaced, "are not the objects featurize wrote at their place (moved, swapped or copied "
                                    "from another store?)")):  # fmt: skip
        for name, bad in sorted(found.items()):
            problems.append(f"{len(bad)} chunk(s) of {name} {what}: {', '.join(bad[:5])}"
                            + (" ..." if len(bad) > 5 else ""))  # fmt: skip
    if not structure and (lost := lost_chunks(loc, group, checksums=False, held=held)):
        problems.append(damage_message(loc, group, lost))
    if root is not None and manifest is not None:
        raise ValueError(
            f"--root {root} and --manifest {manifest}: a store is made from one source; give the one it was"
        )
    if root is not None or manifest is not None:
        problems += _tree_problems(loc, group, attrs, root, manifest)
    return {"problems": problems, "chunks": checked, "bytes": nbytes, "unproven": unproven and len(problems) == 1}


def _tree_problems(loc: Location, group, attrs: dict, root, manifest=None) -> list[str]:
    """How the tree at `root` (or the clips `manifest` lists) differs from the one the store was made from:
    clips added or removed, the lists (the manifest's rows) changed, and every file's bytes re-hashed
    (CRC-32C) against the store's record of them."""
    from speechcls.audio.decode import file_crc32c
    from speechcls.data.tree import index_tree
    from speechcls.store.format import tree_fingerprint

    if manifest is not None:
        from speechcls.data.manifest import read_manifest

        index, source = read_manifest(manifest), f"the manifest {manifest} (and the clips it lists)"
    else:
        index, source = index_tree(root), f"the tree at {root}"
    paths = [str(p) for p in read_all(group, "path")]
    now, before = set(index.paths), set(paths)
    problems = []
    where = "the manifest" if manifest is not None else "the tree"
    for what, names in ((f"not in {where} any more", before - now), (f"in {where} but not in the store", now - before)):
        if names:
            problems.append(
                f"{len(names)} clip(s) {what}: {', '.join(sorted(names)[:5])}" + (" ..." if len(names) > 5 else "")
            )
    crcs = read_all(group, "audio_crc32c")
    changed = [p for p, crc in zip(paths, crcs.tolist()) if p in now and file_crc32c(index.root / p) != crc]
    if changed:
        problems.append(
            f"{len(changed)} clip(s) whose audio bytes changed since featurize: {', '.join(sorted(changed)[:5])}"
            + (" ..." if len(changed) > 5 else "")
        )
    if not problems and tree_fingerprint(index) != (attrs.get("request") or {}).get("tree"):
        what = "the manifest's rows" if manifest is not None else "the validation / testing lists"
        problems.append(f"{what} or the files' modification times changed since featurize")
    if problems:
        problems.append(f"{source} is not the one the store was made from: run the featurize command with "
                        "--overwrite to make the store anew")  # fmt: skip
    return problems
