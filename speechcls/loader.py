"""Cache -> device: `(x, y)` batches of one split of a feature store, on the training device.

Three modes, one batch order:
- device: the split is read once into device memory; each epoch is a permutation indexed on the
  device (no host round trip per batch).
- host: the split is read once into (pinned) host memory; batches are gathered there and copied with
  `non_blocking=True` on a side CUDA stream (timm's PrefetchLoader pattern).
- stream: for stores larger than memory: whole chunks are read by background threads in a shuffled
  chunk order, shuffled again inside a bounded buffer, copied like host batches. Under torchrun every
  rank reads only its own chunks (balanced by rows), so the ranks together read the store once per
  epoch; a store with too few chunks for that falls back to every rank reading all and keeping its part.
The resident modes share `epoch_permutation`, so they give identical batches for a seed. Every
example of the split appears exactly once per epoch; a last batch of one joins the batch before it
(BatchNorm1d cannot train on one example). A waveform store computes the requested variant on the
device per batch with featurize's own module.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from speechcls import config
from speechcls.config import FeatureParams
from speechcls.dataset import random_split
from speechcls import store as stores
from speechcls.store import open_store

SPLIT_NAMES = {"train": 0, "validation": 1, "valid": 1, "test": 2}


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of an epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_bounds(n: int, batch_size: int, min_last: int = 2) -> list[tuple[int, int]]:
    """[start, end) of each batch; a last batch under `min_last` examples (one, by default) joins the
    one before it."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def global_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """[start, end) of each global batch (batch_size examples per rank, all ranks together)."""
    return batch_bounds(n, batch_size * world, min_last=2 * world)


def shard_bounds(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """This rank's [start, end) ranges in the epoch order. Each global batch of batch_size x world
    examples is cut into `world` contiguous parts whose sizes differ by one at most, so every rank
    takes the same number of steps and the ranks together see every example exactly once, without
    padding; a last global batch too small to give each rank two examples joins the one before it.
    With world == 1 this is batch_bounds(n, batch_size)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if n < 2 * world:
        raise ValueError(f"{n} examples cannot give each of {world} ranks two (BatchNorm needs two)")
    return [rank_part(a, b, rank, world) for a, b in global_bounds(n, batch_size, world)]


def rank_part(a: int, b: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's contiguous part of [a, b): `world` parts whose sizes differ by one at most."""
    base, extra = divmod(b - a, world)
    start = a + rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def store_params(attrs: dict) -> FeatureParams:
    return FeatureParams(**attrs["params"]) if attrs["variant"] != "waveform" else FeatureParams(
        "waveform", sample_rate=attrs["sample_rate"], clip_samples=attrs["clip_samples"]
    )


def find_store(variant: str | None = None, cache: stores.Where | None = None) -> stores.Where:
    """The one complete store under the cache (of `variant`, if given); an error naming the candidates."""
    cache = stores.where(cache or config.cache_dir())
    found = []
    for path in stores.glob(cache, "*/*.zarr"):
        try:
            group = open_store(path)
        except ValueError:
            continue  # not a store, incomplete or another format: not a candidate
        if variant is None or group.attrs["variant"] == variant:
            found.append(path)
    if not found:
        what = f"{variant} store" if variant else "store"
        raise ValueError(f"no complete {what} under {cache}: run `speechcls featurize` first, or pass --store")
    if len(found) > 1:
        raise ValueError(
            "several complete stores under " + str(cache) + "; choose one with --store (or narrow with --variant):\n  "
            + "\n  ".join(map(str, found))
        )
    return found[0]


def split_rows(group, split: str, kind: str = "official", seed: int = config.SPLIT_SEED) -> np.ndarray:
    """Sorted store rows of `split` that hold a valid clip. `kind` random applies the one random-split
    function to the store's path array."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown split {split!r}: choose train, validation or test")
    valid = group["valid"][:]
    if kind == "official":
        codes = group["split"][:]
        if (codes < 0).all():
            raise ValueError("this store's tree had no validation/testing lists: use --split random")
    elif kind == "random":
        codes = random_split(list(group["path"][:]), seed)
    else:
        raise ValueError(f"unknown split kind {kind!r}: choose official or random")
    return np.flatnonzero(valid & (codes == SPLIT_NAMES[split]))


def read_rows(loc: stores.Where, array, rows: np.ndarray) -> np.ndarray:
    """features[rows] for sorted rows, reading whole chunks (one read per chunk that holds any)."""
    chunk = array.chunks[0]
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    starts = np.searchsorted(rows, np.arange(0, array.shape[0] + chunk, chunk))
    for c in range(len(starts) - 1):
        a, b = starts[c], starts[c + 1]
        if a == b:
            continue
        out[a:b] = stores.read_chunk(loc, array, c)[rows[a:b] - c * chunk]
    return out


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


@dataclass
class StreamPlan:
    """One epoch of the streaming loader: `starts[c]:starts[c + 1]` are chunk c's split rows; `chunks`
    the ones this rank reads, in order; `sizes` every rank's batch sizes when each reads its own chunks
    (own), else one list, the global batch sizes, each cut into rank parts."""

    starts: np.ndarray
    chunks: list[int]
    sizes: list[list[int]]
    own: bool


def choose_mode(nbytes: int, device: str, budget_fraction: float = 0.4) -> str:
    """device if the split fits in device memory under the budget, else host if in RAM, else stream."""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        if nbytes <= budget_fraction * free:
            return "device"
    elif nbytes <= budget_fraction * _available_ram():
        return "device"  # on the CPU, device memory is host memory: index it directly
    return "host" if nbytes <= budget_fraction * _available_ram() else "stream"


@dataclass
class _Prefetch:
    """Copies host batches to the device on a side CUDA stream, one batch ahead (timm's PrefetchLoader)."""

    device: torch.device

    def __call__(self, batches: Iterator) -> Iterator:
        if self.device.type != "cuda":
            yield from ((x.to(self.device), y.to(self.device)) for x, y in batches)
            return
        stream = torch.cuda.Stream(device=self.device)
        pending = None
        for x, y in batches:
            with torch.cuda.stream(stream):
                nxt = (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            if pending is not None:
                yield pending
            torch.cuda.current_stream(self.device).wait_stream(stream)
            for t in nxt:
                t.record_stream(torch.cuda.current_stream(self.device))  # the copy's memory is used there
            pending = nxt
        if pending is not None:
            yield pending


class FeatureLoader:
    """Batches of one split of a store on `device`. Iterate once per epoch after `set_epoch(e)`."""

    def __init__(
        self,
        store: str | Path,
        split: str = "train",
        kind: str = "official",
        split_seed: int = config.SPLIT_SEED,
        batch_size: int = 128,
        shuffle: bool | None = None,
        seed: int = 0,
        device: str = "cpu",
        mode: str = "auto",
        features: str = "",
        buffer_chunks: int = 4,
        workers: int = 1,
        rank: int = 0,
        world: int = 1,
        own_chunks: bool = True,
    ):
        """`own_chunks` False makes every streaming rank read every chunk (the fallback for coarse stores),
        to compare the two in benchmarks/stream_ranks.py."""
        self.group = open_store(store)
        self.path = stores.where(store)
        attrs = dict(self.group.attrs)
        self.classes: list[str] = attrs["classes"]
        self.store_params = store_params(attrs)
        self.rows = split_rows(self.group, split, kind, split_seed)
        if len(self.rows) == 0:
            raise ValueError(f"{store}: the {kind} {split} split holds no valid clip")
        self.labels = self.group["label"][:][self.rows]
        self.batch_size = batch_size
        self.shuffle = split == "train" if shuffle is None else shuffle
        self.seed = seed
        self.epoch = 0
        self.device = torch.device(device)
        self.buffer_chunks = buffer_chunks
        self.workers = workers
        self.transform = None
        if self.store_params.variant == "waveform":
            from speechcls.features import FeatureExtractor

            self.params = FeatureParams(features or "spectrogram", sample_rate=attrs["sample_rate"], clip_samples=attrs["clip_samples"])
            self.transform = FeatureExtractor(self.params).to(self.device)
        else:
            if features and features != self.store_params.variant:
                raise ValueError(f"--features {features} needs a waveform store; {store} holds {self.store_params.variant}")
            self.params = self.store_params
        item_bytes = int(np.prod(self.group["features"].shape[1:])) * self.group["features"].dtype.itemsize
        self.mode = choose_mode(item_bytes * len(self.rows), str(self.device)) if mode == "auto" else mode
        if self.mode not in ("device", "host", "stream"):
            raise ValueError(f"unknown loader mode {self.mode!r}: choose auto, device, host or stream")
        self.rank, self.world, self.own_chunks = rank, world, own_chunks
        # this rank's batches as [start, end) of the epoch order; refuses a split too small for the ranks
        self.bounds = shard_bounds(len(self.rows), batch_size, rank, world)
        # examples of each step over all ranks (a rank's mean loss is weighted by its share of them);
        # the streaming loader's own-chunk plan changes them per epoch (see global_sizes)
        self._global_sizes = [b - a for a, b in global_bounds(len(self.rows), batch_size, world)]
        self._data = None

    # --- shape and size ---------------------------------------------------------------------------
    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.params.shape  # what the model sees: (C, F, T)

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def n(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_sizes(self) -> list[int]:
        """Examples of each step of this epoch over all ranks (the same list on every rank)."""
        if self.mode == "stream" and (plan := self._stream_plan()).own:
            return [int(s) for s in np.sum(plan.sizes, axis=0)]
        return self._global_sizes

    # --- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = {"device": self._device_batches, "host": self._host_batches, "stream": self._stream_batches}[self.mode]
        for x, y in batches():
            yield self._finish(x), y

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """On the device: int16 waveforms -> the requested features; float16 -> float32."""
        if self.transform is not None:
            with torch.autocast(self.device.type, enabled=False), torch.no_grad():
                return self.transform(x.squeeze(1).float() / 32768.0)
        return x.float()

    def _order(self) -> np.ndarray:
        return epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else np.arange(self.n)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            x = torch.from_numpy(read_rows(self.path, self.group["features"], self.rows))
            y = torch.from_numpy(self.labels.astype(np.int64))
            if self.mode == "device":
                x, y = x.to(self.device), y.to(self.device)
            elif self.device.type == "cuda":
                x, y = x.pin_memory(), y.pin_memory()
            self._data = (x, y)
        return self._data

    def _device_batches(self):
        x, y = self._load()
        order = torch.from_numpy(self._order()).to(self.device)
        for a, b in self.bounds:
            idx = order[a:b]
            yield x.index_select(0, idx), y.index_select(0, idx)

    def _host_batches(self):
        x, y = self._load()
        order = torch.from_numpy(self._order())

        pin = self.device.type == "cuda"

        def gather():
            for a, b in self.bounds:
                idx = order[a:b]
                # gathered straight into pinned memory: one copy, then an async copy to the device
                xb = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, pin_memory=pin)
                yb = torch.empty(len(idx), dtype=y.dtype, pin_memory=pin)
                yield torch.index_select(x, 0, idx, out=xb), torch.index_select(y, 0, idx, out=yb)

        yield from _Prefetch(self.device)(gather())

    def _stream_batches(self):
        yield from _Prefetch(self.device)(self._stream_host())

    def _stream_host(self):
        """Host batches from whole chunks, read ahead by a background thread into a bounded queue."""
        q: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        done = object()

        def produce():
            try:
                for item in self._stream_numpy():
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as e:  # surfaces in the consumer instead of hanging it
                q.put(e)

        thread = threading.Thread(target=produce, daemon=True, name="speechcls-stream")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                xb, yb = torch.from_numpy(item[0]), torch.from_numpy(item[1])
                if self.device.type == "cuda":
                    xb, yb = xb.pin_memory(), yb.pin_memory()
                yield xb, yb
        finally:
            stop.set()
            thread.join(timeout=5)

    def _stream_plan(self) -> "StreamPlan":
        """Which chunks this rank reads in this epoch, and the batch sizes of every rank.

        Chunks holding rows of the split are taken in a (seed, epoch)-shuffled order. Under torchrun each
        chunk goes to the rank holding the fewest rows so far (ranks then differ by one chunk's rows at
        most) and every rank reads only its own chunks, cutting them into len(self) batches whose sizes
        differ by one at most: 1/world of the reads, every row once over the ranks. When the chunks are too
        coarse for that (a rank more than a quarter above an even share, or under two rows a step: a
        store with few chunks), every rank reads every chunk and keeps its part of each global batch
        (shard_bounds' cut), at world x reads."""
        chunk = self.group["features"].chunks[0]
        starts = np.searchsorted(self.rows, np.arange(0, self.group["features"].shape[0] + chunk, chunk))
        chunks = [c for c in range(len(starts) - 1) if starts[c] < starts[c + 1]]
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(len(chunks))
            chunks = [chunks[i] for i in order]
        steps = len(self._global_sizes)
        if self.world > 1 and self.own_chunks:
            parts: list[list[int]] = [[] for _ in range(self.world)]
            held = [0] * self.world
            for c in chunks:
                r = int(np.argmin(held))
                parts[r].append(c)
                held[r] += int(starts[c + 1] - starts[c])
            # own chunks when that keeps every rank within a quarter of an even share (the slowest rank
            # sets a step's time) and gives each two rows a step (BatchNorm)
            if min(held) >= 2 * steps and max(held) * self.world <= 1.25 * sum(held):
                sizes = [[n // steps + (i < n % steps) for i in range(steps)] for n in held]
                return StreamPlan(starts, parts[self.rank], sizes, own=True)
        return StreamPlan(starts, chunks, [list(self._global_sizes)], own=False)

    def _stream_numpy(self):
        """(x, y) numpy batches from whole chunks (the plan's, in its order), rows shuffled in a buffer of
        `buffer_chunks` chunks; batch sizes follow the plan, so every row appears exactly once."""
        feats = self.group["features"]
        chunk = feats.chunks[0]
        plan = self._stream_plan()
        starts, chunks = plan.starts, plan.chunks
        sizes = list(plan.sizes[self.rank] if plan.own else plan.sizes[0])
        rng = np.random.default_rng([self.seed, self.epoch, 2, self.rank if plan.own else 0])
        fill = self.buffer_chunks * chunk

        def read(c: int):
            rows = self.rows[starts[c] : starts[c + 1]]
            return stores.read_chunk(self.path, feats, c)[rows - c * chunk], self.labels[starts[c] : starts[c + 1]].astype(np.int64)

        buf_x: list[np.ndarray] = []
        buf_y: list[np.ndarray] = []
        held = 0
        with ThreadPoolExecutor(self.workers) as pool:
            ahead = [pool.submit(read, c) for c in chunks[: self.workers + 1]]
            nxt = len(ahead)
            while ahead:
                x, y = ahead.pop(0).result()
                if nxt < len(chunks):
                    ahead.append(pool.submit(read, chunks[nxt]))
                    nxt += 1
                buf_x.append(x)
                buf_y.append(y)
                held += len(y)
                last = not ahead
                if held < fill and not last:
                    continue
                bx, by = np.concatenate(buf_x), np.concatenate(buf_y)
                if self.shuffle:
                    p = rng.permutation(len(by))
                    bx, by = bx[p], by[p]
                # emit whole batches, keeping half a buffer back to mix with the next chunks; at the end
                # the remaining batch sizes add up to exactly what is left
                used = 0
                while sizes and (len(by) - used - sizes[0] >= (0 if last else fill // 2)):
                    s = sizes.pop(0)
                    a, b = (used, used + s) if plan.own else rank_part(used, used + s, self.rank, self.world)
                    yield bx[a:b], by[a:b]
                    used += s
                buf_x, buf_y = [bx[used:]], [by[used:]]
                held = len(by) - used
        assert not sizes and held == 0, "streaming lost rows"
