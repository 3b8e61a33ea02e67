"""How a store's rows are cut (chunks of the arrays, blocks of work) and what featurize's buffers take for
a cut: the default chunk size, and the refusal, before any store is made, of a cut the memory or a codec
cannot hold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechcls.config import FeatureParams

DEFAULT_CHUNK_BYTES = 16 << 20  # ~16 MB of raw features per chunk: few objects, whole-chunk reads stay cheap


def default_chunk_rows(params: FeatureParams) -> int:
    item = int(np.prod(params.shape)) * np.dtype(params.store_dtype).itemsize
    return int(max(16, min(1024, DEFAULT_CHUNK_BYTES // item)))


@dataclass
class Layout:
    """How the N rows are cut: chunks of the arrays, blocks of work (whole chunks)."""

    n: int
    chunk_rows: int
    block_rows: int

    @property
    def n_blocks(self) -> int:
        return -(-self.n // self.block_rows)

    @property
    def chunks_per_block(self) -> int:
        return self.block_rows // self.chunk_rows

    def block(self, b: int) -> slice:
        return slice(b * self.block_rows, min((b + 1) * self.block_rows, self.n))


# numcodecs' blosc (and zstd) refuse a buffer over 2**31 - 1 bytes ("Codec does not support buffers of >
# 2147483647 bytes"): a chunk larger than that could be created but never written
MAX_CHUNK_BYTES = 2**31 - 1


# blocks held at once by featurize's pipeline (featurize/stages.py): one decoding, QUEUE_BLOCKS (2) decoded,
# one computing, QUEUE_BLOCKS computed, one encoded and written
BLOCKS_IN_FLIGHT = 7


def layout_bytes(params: FeatureParams, layout: Layout) -> int:
    """Bytes featurize's buffers take for `layout`, an estimate from above: every block in flight holds its
    clips' float32 samples and float32 features (a float16 or int16 store casts them afterwards); a chunk is
    encoded, and read back by every reader, at its full size (zarr pads a partial last chunk), twice over
    (the array and its encoded bytes)."""
    rows = min(layout.block_rows, layout.n)
    items = int(np.prod(params.shape))
    per_clip = 4 * params.clip_samples + 4 * items
    chunk = layout.chunk_rows * items * np.dtype(params.store_dtype).itemsize
    return BLOCKS_IN_FLIGHT * rows * per_clip + 2 * chunk


def check_layout(params: FeatureParams, layout: Layout, batch_size: int) -> None:
    """Refuse, before any store is made, a layout whose buffers (`layout_bytes`) exceed the memory available
    now, or whose chunk no codec takes (MAX_CHUNK_BYTES): a --chunk-rows of 100 M rows would otherwise stop
    in a MemoryError with half a store at --out."""
    from speechcls.runtime import available_ram

    chunk = layout.chunk_rows * int(np.prod(params.shape)) * np.dtype(params.store_dtype).itemsize
    need, have = layout_bytes(params, layout), available_ram()
    if need > have:
        raise ValueError(
            f"--chunk-rows {layout.chunk_rows:,} and --batch-size {batch_size:,} ask for {need / 2**30:,.1f} GiB of "
            f"buffers ({chunk / 2**30:,.2f} GiB a chunk, blocks of {min(layout.block_rows, layout.n):,} clips), more "
            f"than the {have / 2**30:,.1f} GiB of memory available; choose fewer rows (leave --chunk-rows out for "
            f"~{DEFAULT_CHUNK_BYTES >> 20} MB chunks). Nothing was written"
        )
    if chunk > MAX_CHUNK_BYTES:
        raise ValueError(
            f"--chunk-rows {layout.chunk_rows:,}: a chunk of {chunk / 2**30:,.1f} GiB, over the {MAX_CHUNK_BYTES:,} "
            f"bytes a codec takes in one buffer; choose fewer rows (leave --chunk-rows out for "
            f"~{DEFAULT_CHUNK_BYTES >> 20} MB chunks). Nothing was written"
        )
