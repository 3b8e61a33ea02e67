"""Writing stores: decide what to do with a location (create, resume, repair, rebuild, leave), create
a store, write blocks, mark it complete.

Crash safety: zarr's LocalStore writes every chunk and every zarr.json through a temporary file and a
rename; a block's `done` flag is written after its chunks, so a killed run redoes exactly the blocks not
marked done; `complete` is set last. Every per-block record is an object of its own, so ranks of a
distributed run writing disjoint blocks never write the same object.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from speechcls.config import FeatureParams
from speechcls.store.format import (
    ARRAY_CONFIG,
    ARRAYS,
    BLOCK_ARRAYS,
    FORMAT_VERSION,
    DamagedStore,
    Layout,
    attr_digests,
    checksummed,
    digest,
    dimension_names,
    make_codec,
    record_codecs,
    stored_crc32c,
)
from speechcls.store.location import Location, exists, is_empty, members, open_group, read_bytes, remove, to_location
from speechcls.store.reader import lost_chunks, read_attrs, read_skipped, structure_damage


def plan(loc: Location, request: dict, engine: dict, overwrite: bool, tree: Path | None = None) -> str | None:
    """What to do with what is already at `loc`: None (create), "present", "resume", "repair" (a
    complete store that lost chunk objects) or "rebuild" (an older store format). A store made with
    other settings or by another engine is an error unless `overwrite`.

    Nothing but a store speechcls made is ever replaced, `overwrite` or not: a location that is, holds or
    lies inside the `tree` being read is refused (a store there would delete the clips or land among the
    word folders), and so is any other non-empty location that is not a speechcls store; and a store is
    replaced only with nothing in it but its own objects (`foreign_files`: a user's notes.txt is never
    deleted). A store of this format whose metadata or attributes are not what featurize wrote is damaged:
    an error naming what differs (never "present"), which --overwrite answers."""
    if tree is not None:
        _refuse_tree(loc, tree)
    if not exists(loc):
        return None
    if isinstance(loc, Path) and not loc.is_dir():
        raise ValueError(f"{loc} is a file, not a speechcls feature store; choose another --out")
    if not exists(loc, "zarr.json"):
        if is_empty(loc):
            return None
        raise ValueError(_not_a_store(loc))
    attrs = _speechcls_attrs(loc)
    if attrs is None:
        if not _damaged_group_metadata(loc):
            raise ValueError(_not_a_store(loc))
        if not overwrite:
            raise DamagedStore(
                f"{loc}: the store's zarr.json cannot be read (damaged: a flipped byte, a partial copy?), so its "
                "attributes are lost; make it anew with its featurize command and --overwrite"
            )
        attrs = {}
    version = attrs.get("format_version")
    if overwrite or not isinstance(version, int) or version < FORMAT_VERSION or not attrs.get("created"):
        refuse_foreign_files(loc)  # what follows replaces the store
    if overwrite:
        return None
    if version < FORMAT_VERSION:
        return "rebuild"  # made by an older speechcls: unreadable by this one, so made again in full
    if version == FORMAT_VERSION and attrs.get("created") and (problem := structure_damage(loc, _open(loc))):
        raise DamagedStore(problem)
    old = attrs.get("request")
    if old != request:
        diff = sorted(k for k in set(old or {}) | set(request) if (old or {}).get(k) != request.get(k))
        raise ValueError(
            f"{loc} holds a store made with other settings (differs in: {', '.join(diff)}); "
            "pass --overwrite to replace it or --out for a new store"
        )
    if attrs.get("complete") and not lost_chunks(loc, _open(loc)):
        return "present"
    if attrs.get("engine") != engine:
        raise ValueError(
            f"{loc} was made with {attrs.get('engine')}, not {engine}: finish or repair it with the same --backend "
            "and --device (resumed stores must be byte-identical), or --overwrite"
        )
    return "repair" if attrs.get("complete") else "resume"


def _refuse_tree(loc: Location, tree: Path) -> None:
    """A local location that is the tree, holds it or lies inside it. An fsspec URL never holds the
    local tree, so only the store check of `plan` applies there."""
    if not isinstance(loc, Path):
        return
    at, root = loc.resolve(), Path(tree).resolve()  # resolved: a symlink or "../" cannot hide the tree
    if at == root or at in root.parents:
        what = "is the tree being read" if at == root else f"holds the tree being read ({tree})"
        raise ValueError(f"{loc} {what}: a store there would replace the clips; choose another --out")
    if root in at.parents:
        raise ValueError(
            f"{loc} lies inside the tree being read ({tree}): its index would take the store for a word; "
            "choose another --out"
        )


def _open(loc: Location):
    return open_group(loc, mode="r")


def _damaged_group_metadata(loc: Location) -> bool:
    """The group's zarr.json of a speechcls store is unreadable while its arrays are there: every array of
    a format-4 or later store (chunk_crc32c is format 5's) holds a zarr.json, and nothing else is at the top."""
    import json

    try:
        json.loads(read_bytes(loc, "zarr.json"))
        return False  # readable: another kind of Zarr node, or none
    except (ValueError, UnicodeDecodeError):
        pass
    tops = {key.split("/")[0] for key in members(loc)} - {"zarr.json"}
    needed = set(ARRAYS) - {"chunk_crc32c"}
    return needed <= tops <= set(ARRAYS) and all(exists(loc, f"{name}/zarr.json") for name in needed)


def foreign_files(loc: Location) -> list[str]:
    """The files under a store that are none of its own objects: its zarr.json, and in each array's folder
    (one holding a zarr.json) that zarr.json and the chunk objects under c/; the temporary files of writes
    a kill cut short (`<name>.<32 hex>.partial`) count as its own."""
    keys = members(loc)
    arrays = {k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith("/zarr.json")}

    def own(key: str) -> bool:
        parts = key.split("/")
        if key == "zarr.json" or _PARTIAL.fullmatch(parts[-1]):
            return True
        chunk = len(parts) > 2 and parts[1] == "c" and all(p.isdigit() for p in parts[2:])
        return parts[0] in arrays and (parts[1:] == ["zarr.json"] or chunk)

    return sorted(k for k in keys if not own(k))


def refuse_foreign_files(loc: Location) -> None:
    """Replacing a store deletes its folder: refused, naming them, while it holds files featurize did not
    write (a user's notes, another program's output), --overwrite or not."""
    foreign = foreign_files(loc)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ValueError(
            f"{loc} holds {', '.join(foreign[:3])}{more}, which featurize did not write: replacing the store would "
            "delete it, and featurize never deletes a file of yours; move it out of the store's folder (or remove "
            "the folder yourself), then run the command again"
        )


def _speechcls_attrs(loc: Location) -> dict | None:
    """The attributes of the store at `loc` when speechcls made it (a Zarr group recording its format
    version and feature parameters, as every format so far does), else None."""
    try:
        attrs = read_attrs(loc)
    except (ValueError, TypeError, KeyError):  # an array, unreadable JSON, another kind of zarr.json
        return None
    described = isinstance(attrs.get("params"), dict) or isinstance(attrs.get("request"), dict)
    return attrs if isinstance(attrs.get("format_version"), int) and described else None


def store_attrs(loc: Location) -> dict | None:
    """The attributes of a speechcls store at `loc`, or None when there is none (nothing there, an empty
    folder, anything else)."""
    loc = to_location(loc)
    if not exists(loc) or not exists(loc, "zarr.json"):
        return None
    return _speechcls_attrs(loc)


def _not_a_store(loc: Location) -> str:
    return (
        f"{loc} is not empty and is not a speechcls feature store: --overwrite only replaces stores speechcls "
        "made; choose another --out"
    )


class StoreWriter:
    """Creates a store or reopens an unfinished one, writes blocks, marks it complete."""

    def __init__(self, loc: Location, group, layout: Layout, arrays: dict | None = None):
        """`arrays`: the group's arrays by name where the caller has them (just created), else opened."""
        self.loc = loc
        self.group = group
        self.layout = layout
        names = ("features", "valid", "done", "skip_reason", "resampled", "audio_crc32c", "chunk_crc32c")
        self.features, self.decoded, self.done, self.reasons, self.resampled, self.crcs, self.places = (
            (arrays[k] if arrays else group[k]).with_config(ARRAY_CONFIG) for k in names
        )

    @classmethod
    def create(
        cls, loc: Location, params: FeatureParams, request: dict, rows: dict[str, np.ndarray], layout: Layout,
        codec: str, attrs: dict,
    ) -> "StoreWriter":  # fmt: skip
        compressors = checksummed(make_codec(codec))
        loc = to_location(loc)
        if exists(loc):
            refuse_foreign_files(loc)
            _remove_aside(loc)
        if isinstance(loc, Path):
            loc.parent.mkdir(parents=True, exist_ok=True)
        attrs = {
            **attrs,
            "format_version": FORMAT_VERSION,
            "request": request,
            "codec": codec,
            "chunk_rows": layout.chunk_rows,
            "block_rows": layout.block_rows,
        }
        # the first object written: the group with every attribute, its digests and created False, so a
        # kill at any later write leaves a store that the same command recognises as its own and makes
        # again (created False), never "made with other settings"
        state = {"attr_digests": attr_digests(attrs), "created": False, "complete": False}
        group = open_group(loc, mode="w", attributes={**attrs, **state})
        n, blocks, rows_chunk, records = layout.n, layout.n_blocks, (layout.chunk_rows,), record_codecs()
        slots = 1 + len(BLOCK_ARRAYS) * layout.chunks_per_block + 1  # the block's index, then format.block_slots
        specs = {
            "features": {"shape": (n, *params.shape), "chunks": (layout.chunk_rows, *params.shape),
                         "dtype": params.store_dtype, "compressors": compressors, "fill_value": 0},
            "valid": {"shape": (n,), "chunks": rows_chunk, "dtype": "bool"},
            "skip_reason": {"shape": (n,), "chunks": rows_chunk, "dtype": str},
            "audio_crc32c": {"shape": (n,), "chunks": rows_chunk, "dtype": "int64"},
            "done": {"shape": (blocks,), "chunks": (1,), "dtype": "bool"},
            "resampled": {"shape": (blocks,), "chunks": (1,), "dtype": "int32"},
            "chunk_crc32c": {"shape": (blocks, slots), "chunks": (1, slots), "dtype": "int64", "fill_value": -1},
        } | {  # label, split, speaker, path: known before any decoding, one chunk each
            name: {"shape": values.shape, "chunks": (max(len(values), 1),), "dtype": _row_dtype(values)}
            for name, values in rows.items()
        }  # fmt: skip
        dims = dimension_names(params.variant)
        specs = {name: {"compressors": records, "dimension_names": dims[name]} | spec for name, spec in specs.items()}
        arrays = _create_arrays(group, specs)
        written = {name: encode_chunk(arrays[name], 0, values) for name, values in rows.items() if len(values)}
        _put(list(written.values()))
        # the last write of creation: the digest of each array's metadata as stored (read back: the document
        # zarr wrote), each record's CRC-32C by key, and the digests of the attributes with them
        documents = {name: json.loads(read_bytes(loc, f"{name}/zarr.json")) for name in specs}
        crcs = {f"{name}/{arrays[name].metadata.encode_chunk_key((0,))}": stored_crc32c(data.to_bytes())
                for name, (_, data) in written.items()}  # fmt: skip
        update_attrs(group, {"array_digests": {k: digest(v) for k, v in documents.items()},
                             "records_crc32c": crcs, "created": True})  # fmt: skip
        return cls(loc, group, layout, arrays)

    @classmethod
    def reopen(cls, loc: Location) -> "StoreWriter":
        loc = to_location(loc)
        group = open_group(loc, mode="r+")
        n = group["features"].shape[0]
        return cls(loc, group, Layout(n, group.attrs["chunk_rows"], group.attrs["block_rows"]))

    def todo(self) -> list[int]:
        """Blocks not yet written, in order."""
        return [int(b) for b in np.flatnonzero(~self.done[:])]

    def write_block(self, b: int, features: np.ndarray, batch, paths, encoded: list | None = None) -> None:
        """Block b's features and the records of its decoding (`batch`: audio/decode.py's Batch), then its
        done flag. `encoded`: the block's chunk objects, `encode_chunk` of each of `block_chunks` (made on
        other threads while earlier blocks were written); without it they are encoded here."""
        if encoded is None:
            encoded = [encode_chunk(*job) for job in self.block_chunks(b, features, batch, paths)]
        encoded = [*encoded, encode_chunk(self.resampled, b, np.array([batch.resampled], dtype=np.int32))]
        # every chunk object of the block, its resampled count and the record of their CRC-32Cs by slot,
        # concurrently (encoded here, not through zarr's setitem: ~1 ms less of the writing thread a record)
        _put([*encoded, encode_chunk(self.places, b, self.place_record(b, encoded)[None])])
        # marked only once the block's chunks are on disk: a kill before this line redoes the block
        _put([encode_chunk(self.done, b, np.ones(1, dtype=bool))])

    def place_record(self, b: int, encoded: list) -> np.ndarray:
        """Block b's chunk_crc32c row from its encoded objects, `block_chunks`' order (each of BLOCK_ARRAYS'
        chunks in turn, fewer in a last block) and the resampled count's last: b itself, then the CRC-32C of
        each slot of format.block_slots (-1 where the block has no such chunk)."""
        per_block = self.layout.chunks_per_block
        record = np.full(1 + len(BLOCK_ARRAYS) * per_block + 1, -1, dtype=np.int64)
        record[0] = b
        *chunks, resampled = encoded
        k = len(chunks) // len(BLOCK_ARRAYS)  # chunks of each array in this block
        assert len(chunks) == k * len(BLOCK_ARRAYS) and 0 < k <= per_block, (len(chunks), per_block)
        for i, (_, data) in enumerate(chunks):
            record[1 + (i // k) * per_block + i % k] = stored_crc32c(data.to_bytes())
        record[-1] = stored_crc32c(resampled[1].to_bytes())
        return record

    def block_chunks(self, b: int, features: np.ndarray, batch, paths) -> list[tuple]:
        """Block b's chunks as (array, chunk index, rows) for `encode_chunk`: features and the per-row
        records of its decoding (decoded flag, skip reason, audio CRC). Zero-fills skipped rows first."""
        rows = self.layout.block(b)
        features[~batch.decoded] = 0  # a skipped clip keeps its row, zero-filled
        reasons = np.array([batch.skipped.get(p, "") for p in paths], dtype=str)
        # BLOCK_ARRAYS' order: the slots of the block's chunk_crc32c record follow it
        records = [
            (self.features, features), (self.decoded, batch.decoded), (self.reasons, reasons), (self.crcs, batch.crc32c)
        ]  # fmt: skip
        step = self.layout.chunk_rows
        assert rows.start % step == 0, "a block is whole chunks"
        return [
            (array, rows.start // step + k, values[k * step : (k + 1) * step])
            for array, values in records
            for k in range(-(-len(values) // step))
        ]

    def remove_partial_writes(self) -> int:
        """Delete the temporary files of object writes a kill cut short (zarr's LocalStore writes
        `<key>.<32 hex digits>.partial` and renames it into place): the blocks they belonged to are not
        marked done and are written again, and a leftover would make the store differ from an uninterrupted
        one. Only while this process holds the store's lock and before it writes; stores at URLs write each
        object whole and leave none. Returns how many were removed."""
        if not isinstance(self.loc, Path):
            return 0
        stale = [p for p in self.loc.rglob("*.partial") if _PARTIAL.fullmatch(p.name) and p.is_file()]
        for p in stale:
            p.unlink()
        return len(stale)

    def reopen_damaged(self, rows: dict[str, np.ndarray]) -> None:
        """Turns a store that lost chunk objects into a resumable one: every block that lost a chunk is
        marked not done (a run then recomputes exactly those), lost row records are written again from
        the index."""
        lost = lost_chunks(self.loc, self.group)
        if not lost:
            return
        blocks = set()
        for name, chunks in lost.items():
            if name in ("done", "resampled", "chunk_crc32c"):  # one chunk per block
                blocks.update(chunks)
            elif name in rows:
                write_rows(self.group, name, rows[name])
            else:  # chunked along rows like features
                blocks.update(c * self.layout.chunk_rows // self.layout.block_rows for c in chunks)
        update_attrs(self.group, {"complete": False})  # first: killed in between, the next run repairs again
        for b in sorted(blocks):
            self.done[b] = False

    def finish(self, extra: dict) -> tuple[dict[str, str], int]:
        """Mark the store complete, recording `extra` and what its blocks skipped and resampled (read
        back: a resumed store's earlier blocks count too); returns (skipped, resampled)."""
        if not self.done[:].all():
            raise AssertionError("finish() before every block was written")
        skipped, resampled = read_skipped(self.group), int(self.resampled[:].sum())
        update_attrs(self.group, {**extra, "skipped": skipped, "resampled": resampled, "complete": True})
        return skipped, resampled


def update_attrs(group, updates: dict) -> None:
    """Write `updates` into the group's attributes with the digests of them all (format.attr_digests), in
    one write of the group's zarr.json: an attribute is never on disk without its digest."""
    new = {**dict(group.attrs), **updates}
    group.update_attributes({**updates, "attr_digests": attr_digests(new)})  # attrs.update writes once a key


_PARTIAL = re.compile(r".*\.[0-9a-f]{32}\.partial")  # zarr LocalStore's temporary file of one object write


def encode_chunk(array, c: int, values: np.ndarray):
    """(where, bytes) of chunk c (along rows) of `array` holding `values`, byte for byte what zarr's own
    write stores (tests/test_featurize_pipeline.py holds them equal): a partial last chunk padded with
    the fill value to the chunk shape, then the array's codec chain (bytes, compressor, crc32c), each
    codec's synchronous encode. Thread-safe, and the costly part of a write: featurize runs it on its
    pool while earlier blocks are written (numcodecs and the CRC release the GIL)."""
    from zarr.abc.codec import ArrayArrayCodec, SupportsSyncCodec
    from zarr.core.buffer import default_buffer_prototype

    meta, prototype = array.metadata, default_buffer_prototype()
    coords = (c,) + (0,) * (len(meta.shape) - 1)
    spec = meta.get_chunk_spec(coords, array._async_array.config, prototype)
    dtype = spec.dtype.to_native_dtype()
    if values.shape != spec.shape:
        full = np.full(spec.shape, meta.fill_value, dtype=dtype)
        full[: len(values)] = values
        values = full
    data = prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(values, dtype=dtype))
    for codec in meta.codecs:
        # the store's arrays have no array-to-array codec (transpose): the chunk spec stays the same
        assert isinstance(codec, SupportsSyncCodec) and not isinstance(codec, ArrayArrayCodec), codec
        data = codec._encode_sync(data, spec)
    return array.store_path / meta.encode_chunk_key(coords), data


def _put(objects: list) -> None:
    """Write encoded chunk objects concurrently, each as zarr writes it (LocalStore: a temporary file
    renamed into place); the file writes run on zarr's I/O threads."""
    import asyncio

    from zarr.core.sync import sync

    async def put_all():
        await asyncio.gather(*(where.set(data) for where, data in objects))

    sync(put_all())


def _remove_aside(loc: Location) -> None:
    """Remove what is at `loc`; a local folder is first renamed aside, so a kill mid-removal never leaves a
    half-deleted store at `loc`."""
    if isinstance(loc, Path):
        aside = loc.with_name(f".{loc.name}.removing-{os.getpid()}")
        os.replace(loc, aside)
        shutil.rmtree(aside)
    else:
        remove(loc)


def _create_arrays(group, specs: dict[str, dict]) -> dict:
    """Create the arrays of `specs` (name -> create_array's keywords) in `group` concurrently, in one trip
    to zarr's event loop (one after another, creation took ~25 ms of round trips); name -> Array."""
    import asyncio

    import zarr
    from zarr.core.sync import sync

    async def create_all():
        return await asyncio.gather(
            *(group._async_group.create_array(name, config=ARRAY_CONFIG, **spec) for name, spec in specs.items())
        )

    return {name: zarr.Array(a) for name, a in zip(specs, sync(create_all()))}


def _row_dtype(values: np.ndarray):
    return values.dtype if values.dtype.kind != "U" else str


def write_rows(group, name: str, values: np.ndarray) -> None:
    """A per-row record known before any decoding (label, split, speaker, path), written again (one chunk)."""
    group[name].with_config(ARRAY_CONFIG)[:] = values


def cannot_write(loc: Location, e: OSError, then: str = "") -> ValueError:
    """The one line for a store that cannot be written: the system's reason, the folder that refused when
    it is outside the store (a read-only or forbidden parent, the lock file's folder), and what to do: free
    space only when space ran out."""
    import errno

    reason = e.strerror or str(e) or type(e).__name__
    hint = (
        "the disk is full; free some space or choose another --out"
        if e.errno in (errno.ENOSPC, errno.EDQUOT)
        else "choose another --out"
    )
    where = ""
    if e.filename is not None and isinstance(loc, Path):
        failed = Path(os.fsdecode(e.filename))
        if failed != loc and loc not in failed.parents:  # outside the store: say which folder refused
            where = f"{failed if failed in loc.parents else failed.parent}: "
    return ValueError(f"cannot write the store at {loc}: {where}{reason}; {hint}{then}")


@contextlib.contextmanager
def lock(loc: Location):
    """Hold an exclusive lock on a local store while featurize writes it: a second featurize on the same
    store (which would do the work twice, or with --overwrite pull the store from under the first) is
    refused at once. The lock is a file beside the store (.<name>.lock) under flock, which the kernel
    releases when the process ends, however it ends: a killed run leaves no stale lock. Stores at URLs
    are not locked (object stores have no such lock)."""
    if not isinstance(loc, Path):
        yield
        return
    import fcntl
    import socket

    try:
        loc.parent.mkdir(parents=True, exist_ok=True)
        handle = open(loc.with_name(f".{loc.name}.lock"), "a+")
    except OSError as e:
        raise cannot_write(loc, e) from None
    with handle as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise ValueError(
                f"{loc}: another featurize is writing this store ({holder}); wait for it to finish or stop it, then "
                "run this command again"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
