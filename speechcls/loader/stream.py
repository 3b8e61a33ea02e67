"""The streaming loader's epoch, for stores larger than memory: whole chunks read by background threads
in a (seed, epoch)-shuffled chunk order, rows shuffled again in a bounded buffer.

Under torchrun each chunk goes to the rank holding the fewest rows so far (ranks then differ by one
chunk's rows at most) and every rank reads only its own chunks, cutting them into the same number of
batches: the ranks together read the store once per epoch. When the chunks are too coarse for that (a
rank more than a quarter above an even share, or under two rows a step: a store with few chunks),
every rank reads every chunk and keeps its part of each global batch (shard_bounds' cut), at world x
reads.

Resident examples that are no store row (the kws12 task's silence, made by the loader) join the chunks:
they are cut into contiguous slices, one per chunk holding split rows, and chunk c's slice is served
with c's rows (read, shuffled, assigned to a rank as one unit). Every batch then mixes them in their
share of the split, and the own-chunks plan balances units, silence included. Their `rows` are -1 - i.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from speechcls.config import LoaderConfig
from speechcls.dist import Rank
from speechcls.loader.sharding import rank_part
from speechcls.store import reader  # read through the module: tests count reads by patching it
from speechcls.store.location import Location


@dataclass
class StreamPlan:
    """One epoch: `starts[c]:starts[c + 1]` are chunk c's split rows; `chunks` the ones this rank reads,
    in order; `sizes` every rank's batch sizes when each reads its own chunks (own), else one list, the
    global batch sizes, each cut into rank parts."""

    starts: np.ndarray
    chunks: list[int]
    sizes: list[list[int]]
    own: bool


class ChunkStream:
    """Numpy (x, y, rows) batches of one split, whole chunks at a time; every row exactly once per epoch
    (`rows`: the store rows of the batch, which FeatureLoader records and does not yield). `extra`:
    (x (E, *item) in the store's dtype, y (E,)) resident examples served with the chunks, once each."""

    def __init__(
        self, loc: Location, array, labels: np.ndarray, rows: np.ndarray, global_sizes: list[int],
        cfg: LoaderConfig, rank: Rank, extra: tuple[np.ndarray, np.ndarray] | None = None,
    ):  # fmt: skip
        self.loc, self.array, self.labels, self.rows = loc, array, labels, rows
        self.global_sizes, self.cfg, self.rank = global_sizes, cfg, rank
        self.shuffle = bool(cfg.shuffle)
        chunk = array.chunks[0]
        self.starts = np.searchsorted(rows, np.arange(0, array.shape[0] + chunk, chunk))
        self.extra = extra
        # extra_starts[c]:extra_starts[c + 1]: the resident examples served with chunk c, contiguous
        # near-equal slices over the chunks that hold split rows, in chunk order
        n_extra = 0 if extra is None else len(extra[1])
        holding = np.flatnonzero(np.diff(self.starts) > 0)
        assert n_extra == 0 or len(holding), "resident examples need a chunk holding split rows to join"
        per = np.zeros(len(self.starts) - 1, dtype=np.int64)
        per[holding] = np.diff(np.arange(len(holding) + 1) * n_extra // max(len(holding), 1))
        self.extra_starts = np.concatenate([[0], np.cumsum(per)])
        self.unit_sizes = np.diff(self.starts) + per  # examples served with each chunk

    def natural_order(self) -> np.ndarray:
        """The unshuffled order of examples (0..R-1: the rows, R..R+E-1: the extra examples): chunk by
        chunk, each chunk's rows then its extra examples. Without extra examples, arange(R)."""
        n_rows = len(self.rows)
        parts = [
            np.concatenate([np.arange(self.starts[c], self.starts[c + 1]),
                            n_rows + np.arange(self.extra_starts[c], self.extra_starts[c + 1])])
            for c in range(len(self.starts) - 1)
        ]  # fmt: skip
        return np.concatenate(parts).astype(np.int64) if parts else np.arange(0)

    def plan(self, epoch: int) -> StreamPlan:
        """Which chunks this rank reads in `epoch`, and the batch sizes of every rank."""
        starts, units = self.starts, self.unit_sizes
        chunks = [c for c in range(len(units)) if units[c] > 0]
        if self.shuffle:
            order = np.random.default_rng([self.cfg.seed, epoch, 1]).permutation(len(chunks))
            chunks = [chunks[i] for i in order]
        steps, world = len(self.global_sizes), self.rank.world
        if world > 1 and self.cfg.own_chunks:
            parts: list[list[int]] = [[] for _ in range(world)]
            held = [0] * world
            for c in chunks:
                r = int(np.argmin(held))
                parts[r].append(c)
                held[r] += int(units[c])
            # own chunks when that keeps every rank within a quarter of an even share (the slowest rank
            # sets a step's time) and gives each two rows a step (BatchNorm)
            if min(held) >= 2 * steps and max(held) * world <= 1.25 * sum(held):
                sizes = [[n // steps + (i < n % steps) for i in range(steps)] for n in held]
                return StreamPlan(starts, parts[self.rank.rank], sizes, own=True)
        return StreamPlan(starts, chunks, [list(self.global_sizes)], own=False)

    def _read(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunk c's split rows, then the extra examples served with it (rows -1 - i)."""
        a, b = self.starts[c], self.starts[c + 1]
        rows = self.rows[a:b]
        x = reader.read_chunk(self.loc, self.array, c)[rows - c * self.array.chunks[0]]
        y = self.labels[a:b].astype(np.int64)
        ea, eb = self.extra_starts[c], self.extra_starts[c + 1]
        if ea == eb:
            return x, y, rows
        ex, ey = self.extra
        return (np.concatenate([x, ex[ea:eb]]), np.concatenate([y, ey[ea:eb].astype(np.int64)]),
                np.concatenate([rows, -1 - np.arange(ea, eb)]))  # fmt: skip

    def batches(self, epoch: int):
        """(x, y, rows) numpy batches from whole chunks (the plan's, in its order), rows shuffled in a buffer
        of `buffer_chunks` chunks; batch sizes follow the plan, so every row appears exactly once. `rows`
        are the batch's store rows, shuffled with it (no extra random draws: the order is unchanged)."""
        plan = self.plan(epoch)
        chunks, rank, workers = plan.chunks, self.rank, self.cfg.workers
        sizes = list(plan.sizes[rank.rank] if plan.own else plan.sizes[0])
        rng = np.random.default_rng([self.cfg.seed, epoch, 2, rank.rank if plan.own else 0])
        fill = self.cfg.buffer_chunks * self.array.chunks[0]
        buf_x: list[np.ndarray] = []
        buf_y: list[np.ndarray] = []
        buf_r: list[np.ndarray] = []
        held = 0
        with ThreadPoolExecutor(workers) as pool:
            ahead = [pool.submit(self._read, c) for c in chunks[: workers + 1]]
            nxt = len(ahead)
            while ahead:
                x, y, r = ahead.pop(0).result()
                if nxt < len(chunks):
                    ahead.append(pool.submit(self._read, chunks[nxt]))
                    nxt += 1
                buf_x.append(x)
                buf_y.append(y)
                buf_r.append(r)
                held += len(y)
                last = not ahead
                if held < fill and not last:
                    continue
                bx, by, br = np.concatenate(buf_x), np.concatenate(buf_y), np.concatenate(buf_r)
                if self.shuffle:
                    p = rng.permutation(len(by))
                    bx, by, br = bx[p], by[p], br[p]
                # emit whole batches, keeping half a buffer back to mix with the next chunks; at the end
                # the remaining batch sizes add up to exactly what is left
                used = 0
                while sizes and (len(by) - used - sizes[0] >= (0 if last else fill // 2)):
                    s = sizes.pop(0)
                    a, b = (used, used + s) if plan.own else rank_part(used, used + s, rank.rank, rank.world)
                    yield bx[a:b], by[a:b], br[a:b]
                    used += s
                buf_x, buf_y, buf_r = [bx[used:]], [by[used:]], [br[used:]]
                held = len(by) - used
        assert not sizes and held == 0, "streaming lost rows"
