"""Writing stores: decide what to do with a location (create, resume, repair, rebuild, leave), create
a store, write blocks, mark it complete.

Crash safety: zarr's LocalStore writes every chunk and every zarr.json through a temporary file and a
rename; a block's `done` flag is written after its chunks, so a killed run redoes exactly the blocks not
marked done; `complete` is set last. Every per-block record is an object of its own, so ranks of a
distributed run writing disjoint blocks never write the same object.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import numpy as np

from speechcls.config import FeatureParams
from speechcls.store.format import (
    ARRAY_CONFIG,
    FORMAT_VERSION,
    Layout,
    attr_digests,
    checksummed,
    dimension_names,
    make_codec,
    record_codecs,
)
from speechcls.store.location import Location, exists, is_empty, open_group, remove, to_location
from speechcls.store.reader import lost_chunks, read_attrs, read_skipped


def plan(loc: Location, request: dict, engine: dict, overwrite: bool, tree: Path | None = None) -> str | None:
    """What to do with what is already at `loc`: None (create), "present", "resume", "repair" (a
    complete store that lost chunk objects) or "rebuild" (an older store format). A store made with
    other settings or by another engine is an error unless `overwrite`.

    Nothing but a store speechcls made is ever replaced, `overwrite` or not: a location that is, holds or
    lies inside the `tree` being read is refused (a store there would delete the clips or land among the
    word folders), and so is any other non-empty location that is not a speechcls store."""
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
        raise ValueError(_not_a_store(loc))
    if overwrite:
        return None
    version = attrs.get("format_version")
    if version < FORMAT_VERSION:
        return "rebuild"  # made by an older speechcls: unreadable by this one, so made again in full
    old = attrs.get("request")
    if old != request:
        diff = sorted(k for k in set(old or {}) | set(request) if (old or {}).get(k) != request.get(k))
        raise ValueError(
            f"{loc} holds a store made with other settings (differs in: {', '.join(diff)}); "
            "pass --overwrite to replace it or --out for a new store"
        )
    if attrs.get("complete") and not lost_chunks(loc, open_group(loc, mode="r")):
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
        names = ("features", "valid", "done", "skip_reason", "resampled", "audio_crc32c")
        self.features, self.decoded, self.done, self.reasons, self.resampled, self.crcs = (
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
        specs = {
            "features": {"shape": (n, *params.shape), "chunks": (layout.chunk_rows, *params.shape),
                         "dtype": params.store_dtype, "compressors": compressors, "fill_value": 0},
            "valid": {"shape": (n,), "chunks": rows_chunk, "dtype": "bool"},
            "skip_reason": {"shape": (n,), "chunks": rows_chunk, "dtype": str},
            "audio_crc32c": {"shape": (n,), "chunks": rows_chunk, "dtype": "int64"},
            "done": {"shape": (blocks,), "chunks": (1,), "dtype": "bool"},
            "resampled": {"shape": (blocks,), "chunks": (1,), "dtype": "int32"},
        } | {  # label, split, speaker, path: known before any decoding, one chunk each
            name: {"shape": values.shape, "chunks": (max(len(values), 1),), "dtype": _row_dtype(values)}
            for name, values in rows.items()
        }  # fmt: skip
        dims = dimension_names(params.variant)
        specs = {name: {"compressors": records, "dimension_names": dims[name]} | spec for name, spec in specs.items()}
        arrays = _create_arrays(group, specs)
        _put([encode_chunk(arrays[name], 0, values) for name, values in rows.items() if len(values)])
        group.attrs["created"] = True  # the last write of creation
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
        # every chunk object of the block and its resampled count, concurrently (encoded here, not through
        # zarr's setitem: ~1 ms less of the writing thread a record)
        _put([*encoded, encode_chunk(self.resampled, b, np.array([batch.resampled], dtype=np.int32))])
        # marked only once the block's chunks are on disk: a kill before this line redoes the block
        _put([encode_chunk(self.done, b, np.ones(1, dtype=bool))])

    def block_chunks(self, b: int, features: np.ndarray, batch, paths) -> list[tuple]:
        """Block b's chunks as (array, chunk index, rows) for `encode_chunk`: features and the per-row
        records of its decoding (decoded flag, skip reason, audio CRC). Zero-fills skipped rows first."""
        rows = self.layout.block(b)
        features[~batch.decoded] = 0  # a skipped clip keeps its row, zero-filled
        reasons = np.array([batch.skipped.get(p, "") for p in paths], dtype=str)
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
            if name in ("done", "resampled"):  # one chunk per block
                blocks.update(chunks)
            elif name in rows:
                write_rows(self.group, name, rows[name])
            else:  # chunked along rows like features
                blocks.update(c * self.layout.chunk_rows // self.layout.block_rows for c in chunks)
        self.group.attrs["complete"] = False  # first: killed in between, the next run repairs again
        for b in sorted(blocks):
            self.done[b] = False

    def finish(self, extra: dict) -> tuple[dict[str, str], int]:
        """Mark the store complete, recording `extra` and what its blocks skipped and resampled (read
        back: a resumed store's earlier blocks count too); returns (skipped, resampled)."""
        if not self.done[:].all():
            raise AssertionError("finish() before every block was written")
        skipped, resampled = read_skipped(self.group), int(self.resampled[:].sum())
        self.group.attrs.update({**extra, "skipped": skipped, "resampled": resampled, "complete": True})
        return skipped, resampled


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
        raise ValueError(
            f"cannot write the store at {loc}: {e.strerror or e}. Free space or choose another --out"
        ) from None
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
