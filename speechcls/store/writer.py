"""Writing stores: decide what to do with a location (create, resume, repair, rebuild, leave), create
a store, write blocks, mark it complete.

Crash safety: zarr's LocalStore writes every chunk and every zarr.json through a temporary file and a
rename; a block's `done` flag is written after its chunks, so a killed run redoes exactly the blocks not
marked done; `complete` is set last. Every per-block record is an object of its own, so ranks of a
distributed run writing disjoint blocks never write the same object.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechcls.config import FeatureParams
from speechcls.store.format import ARRAY_CONFIG, FORMAT_VERSION, Layout, make_codec
from speechcls.store.location import Location, exists, is_empty, open_group, remove, to_location
from speechcls.store.reader import lost_chunks, read_attrs, read_skipped


def plan(loc: Location, request: dict, engine: dict, overwrite: bool) -> str | None:
    """What to do with what is already at `loc`: None (create), "present", "resume", "repair" (a
    complete store that lost chunk objects) or "rebuild" (an older store format). A store made with
    other settings or by another engine is an error unless `overwrite`."""
    if not exists(loc) or overwrite:
        return None
    if not exists(loc, "zarr.json"):
        if not is_empty(loc):
            raise ValueError(
                f"{loc} exists and is not a feature store; remove it, choose another --out, or --overwrite"
            )
        return None
    attrs = read_attrs(loc)
    version = attrs.get("format_version")
    if isinstance(version, int) and version < FORMAT_VERSION:
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


class StoreWriter:
    """Creates a store or reopens an unfinished one, writes blocks, marks it complete."""

    def __init__(self, loc: Location, group, layout: Layout):
        self.loc = loc
        self.group = group
        self.layout = layout
        self.features, self.decoded, self.done, self.reasons, self.resampled = (
            group[k].with_config(ARRAY_CONFIG) for k in ("features", "valid", "done", "skip_reason", "resampled")
        )

    @classmethod
    def create(
        cls, loc: Location, params: FeatureParams, request: dict, rows: dict[str, np.ndarray], layout: Layout,
        codec: str, attrs: dict,
    ) -> "StoreWriter":  # fmt: skip
        compressors = make_codec(codec)
        loc = to_location(loc)
        if exists(loc):
            remove(loc)
        if isinstance(loc, Path):
            loc.parent.mkdir(parents=True, exist_ok=True)
        group = open_group(loc, mode="w")
        n, blocks, rows_chunk = layout.n, layout.n_blocks, (layout.chunk_rows,)
        group.create_array(
            "features", shape=(n, *params.shape), chunks=(layout.chunk_rows, *params.shape),
            dtype=params.store_dtype, compressors=compressors, fill_value=0, config=ARRAY_CONFIG,
        )  # fmt: skip
        group.create_array("valid", shape=(n,), chunks=rows_chunk, dtype="bool", fill_value=False, config=ARRAY_CONFIG)
        group.create_array("skip_reason", shape=(n,), chunks=rows_chunk, dtype=str, config=ARRAY_CONFIG)
        group.create_array("done", shape=(blocks,), chunks=(1,), dtype="bool", fill_value=False, config=ARRAY_CONFIG)
        group.create_array("resampled", shape=(blocks,), chunks=(1,), dtype="int32", fill_value=0, config=ARRAY_CONFIG)
        for name, values in rows.items():  # label, split, speaker, path: known before any decoding
            write_rows(group, name, values, create=True)
        group.attrs.update(
            {
                **attrs,
                "format_version": FORMAT_VERSION,
                "request": request,
                "codec": codec,
                "chunk_rows": layout.chunk_rows,
                "block_rows": layout.block_rows,
                "complete": False,
            }
        )
        return cls(loc, group, layout)

    @classmethod
    def reopen(cls, loc: Location) -> "StoreWriter":
        loc = to_location(loc)
        group = open_group(loc, mode="r+")
        n = group["features"].shape[0]
        return cls(loc, group, Layout(n, group.attrs["chunk_rows"], group.attrs["block_rows"]))

    def todo(self) -> list[int]:
        """Blocks not yet written, in order."""
        return [int(b) for b in np.flatnonzero(~self.done[:])]

    def write_block(
        self, b: int, features: np.ndarray, decoded: np.ndarray, skipped: dict[str, str], resampled: int, paths
    ) -> None:
        rows = self.layout.block(b)
        features[~decoded] = 0  # a skipped clip keeps its row, zero-filled
        self.features[rows] = features
        self.decoded[rows] = decoded
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
