"""Writing stores: create a store (once guard.py's plan has said what to do with the location), write
blocks, mark it complete.

Crash safety: zarr's LocalStore writes every chunk and every zarr.json through a temporary file and a
rename; a block's `done` flag is written after its chunks, so a killed run redoes exactly the blocks not
marked done; `complete` is set last. Every per-block record is an object of its own, so ranks of a
distributed run writing disjoint blocks never write the same object.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from speechcls.config import FeatureParams
from speechcls.store.format import (
    ARRAY_CONFIG,
    BLOCK_ARRAYS,
    FORMAT_VERSION,
    attr_digests,
    checksummed,
    digest,
    dimension_names,
    make_codec,
    record_codecs,
    stored_crc32c,
)
from speechcls.store.guard import PARTIAL, refuse_foreign_files
from speechcls.store.layout import Layout
from speechcls.store.location import Location, exists, open_group, read_bytes, remove, to_location
from speechcls.store.proof import lost_chunks
from speechcls.store.reader import read_skipped


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
        crcs = {f"{name}/{arrays[name].metadata.encode_chunk_key((0,))}": stored_crc32c(tail(data))
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
            record[1 + (i // k) * per_block + i % k] = stored_crc32c(tail(data))
        record[-1] = stored_crc32c(tail(resampled[1]))
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
        stale = [p for p in self.loc.rglob("*.partial") if PARTIAL.fullmatch(p.name) and p.is_file()]
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


class RawChunk:
    """A chunk object of an uncompressed array (codecs: bytes, crc32c) kept as its two parts: the chunk's
    values where they already lie (the block's rows, no copy) and the CRC-32C of their bytes. Its bytes
    are those zarr's codec chain stores (the values, then the CRC little endian); `_put` writes the parts
    into the file one after the other, where the codec chain would first copy them into one buffer."""

    def __init__(self, values: np.ndarray):
        import google_crc32c

        self.view = values.reshape(-1).view(np.uint8)  # contiguous: a view, not a copy
        self.crc = google_crc32c.value(self.view).to_bytes(4, "little")

    def to_bytes(self) -> bytes:
        return self.view.tobytes() + self.crc


def _is_raw(meta) -> bool:
    """The array's codec chain is bytes (little endian, or a 1-byte dtype) then crc32c, nothing else."""
    from zarr.codecs import BytesCodec, Crc32cCodec

    codecs = meta.codecs
    return (
        len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], Crc32cCodec)
        and (codecs[0].endian is None or codecs[0].endian.name == "little")
    )  # fmt: skip


def tail(data) -> bytes:
    """The last 4 bytes of an encoded chunk object (its CRC-32C), without copying the rest."""
    return data.crc if isinstance(data, RawChunk) else data[-4:].to_bytes()


def encode_chunk(array, c: int, values: np.ndarray):
    """(where, bytes) of chunk c (along rows) of `array` holding `values`, byte for byte what zarr's own
    write stores (tests/test_featurize_pipeline.py holds them equal): a partial last chunk padded with
    the fill value to the chunk shape, then the array's codec chain (bytes, compressor, crc32c), each
    codec's synchronous encode. An uncompressed array's chunk is a RawChunk instead (the same bytes, not
    copied). Thread-safe, and the costly part of a write: featurize runs it on its pool while earlier
    blocks are written (numcodecs and the CRC release the GIL)."""
    import sys

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
    values = np.ascontiguousarray(values, dtype=dtype)
    where = array.store_path / meta.encode_chunk_key(coords)
    if _is_raw(meta) and values.dtype.kind in "biuf" and (values.dtype.itemsize == 1 or sys.byteorder == "little"):
        return where, RawChunk(values)
    data = prototype.nd_buffer.from_numpy_array(values)
    for codec in meta.codecs:
        # the store's arrays have no array-to-array codec (transpose): the chunk spec stays the same
        assert isinstance(codec, SupportsSyncCodec) and not isinstance(codec, ArrayArrayCodec), codec
        data = codec._encode_sync(data, spec)
    return where, data


def _write_file(path: Path, parts: list) -> None:
    """`parts` into the file at `path` as zarr's LocalStore writes an object: a temporary file
    (<name>.<32 hex>.partial) renamed into place, so a kill leaves the old object or none."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{uuid.uuid4().hex}.partial")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            views = [memoryview(x).cast("B") for x in parts if len(x)]
            while views:  # writev may write less than asked: the rest again
                n = os.writev(fd, views)
                while views and n >= len(views[0]):
                    n -= len(views.pop(0))
                if views:
                    views[0] = views[0][n:]
        finally:
            os.close(fd)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _put(objects: list) -> None:
    """Write encoded chunk objects, each as zarr writes it (LocalStore: a temporary file renamed into
    place): concurrently on zarr's I/O threads, and a RawChunk's parts straight from where they lie
    (into a local store's file with one writev; elsewhere joined, then stored by zarr)."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import LocalStore

    local, rest = [], []
    for where, data in objects:
        if isinstance(data, RawChunk) and isinstance(where.store, LocalStore):
            local.append((Path(where.store.root) / where.path, [data.view, data.crc]))
        elif isinstance(data, RawChunk):
            rest.append((where, default_buffer_prototype().buffer.from_bytes(data.to_bytes())))
        else:
            rest.append((where, data))
    for path, parts in local:
        _write_file(path, parts)

    async def put_all():
        await asyncio.gather(*(where.set(data) for where, data in rest))

    if rest:
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
