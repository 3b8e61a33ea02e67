"""Cache -> device: `(x, y)` batches of one split of a feature store, on the training device.

Three modes, one batch order:

- device: the split is read once into device memory; each epoch is a permutation indexed on the
  device (no host round trip per batch).
- host: the split is read once into (pinned) host memory; batches are gathered there and copied with
  `non_blocking=True` on a side CUDA stream (timm's PrefetchLoader pattern).
- stream: for stores larger than memory (loader/stream.py): whole chunks read by background threads,
  copied like host batches.

The resident modes share `epoch_permutation`, so they give identical batches for a seed. Every
example of the split appears exactly once per epoch; a last batch of one joins the batch before it
(BatchNorm1d cannot train on one example). A waveform store computes the requested variant on the
device per batch with featurize's own module.

Tasks (data/tasks.py, `cfg.task`): the loader serves the task's examples of the split, with the task's
classes and labels. kws12's silence examples are made once, here, from background noise (data/noise.py):
int16 rows like the store's for a waveform store, the store's features (FeatureExtractor, on the
loader's device, in the store's dtype) otherwise, kept resident and served with the store rows in
every mode: example i < len(rows) is store row rows[i], example len(rows) + j is silence example j
(`batch_rows` names it -1 - j). Every example exactly once per epoch, the order a function of (seed,
epoch), every rank its shard.

A `pipeline` (the training input pipeline, speechcls/audio/pipeline.py) replaces the loader's own
conversion: `pipeline(x, epoch, position)` on each batch, on the device, under no_grad, where x is the
(B, L) float32 waveform (int16 / 32768) of a waveform store or the (B, C, F, T) float32 features of a
feature store, and `position` the index of the batch's first example in the epoch's order over all
ranks (global batch k is rank 0's part, then rank 1's, ...; see positions()).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import numpy as np
import torch

from speechcls.config import FeatureParams, LoaderConfig
from speechcls.data.tasks import make_task, task_split
from speechcls.dist import Rank
from speechcls.loader.prefetch import background, to_device
from speechcls.loader.sharding import epoch_permutation, global_bounds, rank_part, shard_bounds
from speechcls.loader.stream import ChunkStream
from speechcls.runtime import available_ram
from speechcls.store.format import params_from_attrs
from speechcls.store.location import to_location
from speechcls.store.reader import open_store, read_all, read_chunk, split_rows

MODES = ("device", "host", "stream")


class NeedsWaveformStore(ValueError):
    """--features other than a feature store's own variant: only a waveform store computes features."""


def choose_mode(nbytes: int, device: str, budget_fraction: float = 0.4) -> str:
    """device if the split fits in device memory under the budget, else host if in RAM, else stream."""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        if nbytes <= budget_fraction * free:
            return "device"
    elif nbytes <= budget_fraction * available_ram():
        return "device"  # on the CPU, device memory is host memory: index it directly
    return "host" if nbytes <= budget_fraction * available_ram() else "stream"


class FeatureLoader:
    """Batches of one split of a store on the configured device. Iterate once per epoch after
    `set_epoch(e)`. `FeatureLoader(store, "train", batch_size=64, mode="stream")`: keywords override
    fields of `cfg`. Under torchrun pass this process's `rank`: it gets its shard of every epoch.
    `pipeline(x, epoch, position)`: see the module's docstring (None: the loader's own conversion)."""

    def __init__(
        self, store, split: str = "train", cfg: LoaderConfig | None = None, rank: Rank = Rank(),
        pipeline: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None, **overrides,
    ):  # fmt: skip
        cfg = replace(cfg or LoaderConfig(), **overrides)
        self.cfg = cfg = replace(cfg, shuffle=split == "train" if cfg.shuffle is None else cfg.shuffle)
        self.pipeline = pipeline
        self.loc = to_location(store)
        self.group = open_store(self.loc)
        attrs = dict(self.group.attrs)
        self.store_params = params_from_attrs(attrs)
        store_rows = split_rows(self.group, split, cfg.split_kind, cfg.split_seed)
        if len(store_rows) == 0:
            raise ValueError(f"{store}: the {cfg.split_kind} {split} split holds no decoded clip")
        self.task = make_task(cfg.task, attrs["classes"], cfg.keywords)
        paths = read_all(self.group, "path")[store_rows] if self.task.needs_paths else None
        self.view = task_split(self.task, store_rows, read_all(self.group, "label")[store_rows], paths, split)
        if self.view.n == 0:  # kws12 (keywords) on a split without any of its words
            raise ValueError(
                f"{store}: the {cfg.split_kind} {split} split holds none of the {cfg.task} task's words (of its "
                f"{len(store_rows)} decoded clips): choose another split kind or task"
            )
        self.classes: list[str] = self.view.classes
        self.rows = self.view.rows  # the store rows served (sorted); silence examples follow them
        self.n_silence = self.view.n_silence
        self.labels = self.view.all_labels()  # (n,): the rows' task labels, then the silence examples'
        self.example_rows = np.concatenate([self.rows, -1 - np.arange(self.n_silence)])  # what batch_rows names
        self.epoch = 0
        self.device = torch.device(cfg.device)
        self.rank = rank
        self.params, self.transform = self._features(cfg.features, attrs)
        feats = self.group["features"]
        self.noise: dict | None = None  # the noise recordings' fingerprint, where silence was made
        self.silence = self._silence(self.view.split, attrs, feats.dtype) if self.n_silence else None
        item_bytes = int(np.prod(feats.shape[1:])) * feats.dtype.itemsize
        self.mode = choose_mode(item_bytes * self.n, str(self.device)) if cfg.mode == "auto" else cfg.mode
        if self.mode not in MODES:
            raise ValueError(f"unknown loader mode {self.mode!r}: choose auto, device, host or stream")
        # this rank's batches as [start, end) of the epoch order; refuses a split too small for the ranks
        self.bounds = shard_bounds(self.n, cfg.batch_size, rank.rank, rank.world)
        # examples of each step over all ranks (a rank's mean loss is weighted by its share of them);
        # the streaming loader's own-chunk plan changes them per epoch (see global_sizes)
        self._global_sizes = [b - a for a, b in global_bounds(self.n, cfg.batch_size, rank.world)]
        extra = None if self.silence is None else (self.silence, self.labels[len(self.rows) :])
        self.stream = ChunkStream(
            self.loc, feats, self.view.labels, self.rows, self._global_sizes, cfg, rank, extra=extra
        )
        # unshuffled: chunk by chunk, rows then the chunk's silence (what streaming serves), in every mode
        self._natural = self.stream.natural_order()
        self._data = None
        self._stream_rows: tuple[int, list[np.ndarray]] = (-1, [])  # (epoch, store rows of each batch yielded)

    def _silence(self, split: str, attrs: dict, dtype) -> np.ndarray:
        """The split's silence examples as stored items: (S, 1, L) int16 for a waveform store, else
        (S, C, F, T) features in the store's dtype, computed on the loader's device. Each is quantized
        to 16 bits first, as if it were a clip of the tree (featurize's to_pcm16), so a waveform store
        and a feature store of one tree hold the same silence."""
        from speechcls.audio.features import FeatureExtractor, to_pcm16
        from speechcls.data.noise import load_noise, looked_at, noise_fingerprint, noise_source, silence_clips

        folder = noise_source(attrs, self.cfg.noise_dir)
        if folder is None:
            raise ValueError(
                f"the {self.task.name} task's {split} split needs {self.n_silence} silence examples cut from "
                f"background noise, and none was found at {looked_at(attrs)}: pass --noise-dir FOLDER (a folder "
                "of background .wav recordings, such as a Speech Commands tree's _background_noise_)"
            )
        p = self.store_params
        wave = silence_clips(load_noise(folder, p.sample_rate, p.clip_samples), split, self.n_silence, p.clip_samples)
        self.noise = noise_fingerprint(folder)
        pcm = to_pcm16(torch.from_numpy(wave))  # (S, L) int16
        if p.variant == "waveform":
            return pcm.unsqueeze(1).numpy()  # (S, 1, L): the store's rows
        extractor = FeatureExtractor(p).to(self.device)
        out = np.empty((len(pcm), *p.shape), dtype=dtype)
        with torch.autocast(self.device.type, enabled=False), torch.no_grad():
            for a in range(0, len(pcm), 256):  # bounded device memory (complex: 208 kB an example)
                x = pcm[a : a + 256].to(self.device).float() / 32768.0
                out[a : a + 256] = extractor(x).cpu().numpy().astype(dtype)
        return out

    def _features(self, features: str, attrs: dict):
        """What the model sees, and the on-device transform that makes it from a waveform store."""
        if self.store_params.variant == "waveform":
            from speechcls.audio.features import FeatureExtractor

            params = FeatureParams(
                features or "spectrogram", sample_rate=attrs["sample_rate"], clip_samples=attrs["clip_samples"]
            )
            return params, FeatureExtractor(params).to(self.device)
        if features and features != self.store_params.variant:
            raise NeedsWaveformStore(
                f"--features {features} needs a waveform store; {self.loc} holds {self.store_params.variant}"
            )
        return self.store_params, None

    # --- shape and size ---------------------------------------------------------------------------
    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.params.shape  # what the model sees: (C, F, T)

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def n(self) -> int:
        """Examples of the split for the task: store rows, then silence examples."""
        return len(self.example_rows)

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_sizes(self) -> list[int]:
        """Examples of each step of this epoch over all ranks (the same list on every rank)."""
        if self.mode == "stream" and (plan := self.stream.plan(self.epoch)).own:
            return [int(s) for s in np.sum(plan.sizes, axis=0)]
        return self._global_sizes

    def batch_rows(self, step: int) -> np.ndarray:
        """The store rows of this rank's batch `step` (from 0) of the current epoch, in batch order: what
        an error about a batch names; silence example j shows as -1 - j. The resident modes recompute
        them from the epoch order; the streaming mode records them as it yields, so `step` must have been
        yielded this epoch."""
        if self.mode != "stream":
            a, b = self.bounds[step]
            return self.example_rows[self._order()[a:b]]
        epoch, rows = self._stream_rows
        if epoch != self.epoch or not 0 <= step < len(rows):
            raise IndexError(f"step {step} of epoch {self.epoch} has not been streamed")
        return rows[step]

    # --- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = {"device": self._device_batches, "host": self._host_batches, "stream": self._stream_batches}[
            self.mode
        ]
        if self.pipeline is None:
            for x, y in batches():
                yield self._finish(x), y
            return
        for position, (x, y) in zip(self.positions(), batches(), strict=True):
            yield self._pipe(x, position), y

    def positions(self) -> list[int]:
        """Where each of this rank's batches of the current epoch starts in the epoch's example order over
        all ranks: global batch k is rank 0's part, then rank 1's, ...; its start is the sum of the
        global batches before it. Resident modes: the shard's own start (shard_bounds cuts the epoch
        order that way). Streaming with own chunks: k's global start plus the lower ranks' sizes at
        step k (the plan knows every rank's); every chunk on every rank: rank_part of global batch k.
        Unique per batch and rank, and a function of (seed, epoch) like the batches."""
        if self.mode != "stream":
            return [a for a, _b in self.bounds]
        plan = self.stream.plan(self.epoch)
        sizes = np.asarray(plan.sizes, dtype=np.int64)  # (world, steps) own, else (1, steps) global
        totals = sizes.sum(axis=0)
        starts = np.concatenate([[0], np.cumsum(totals)[:-1]])
        if plan.own:
            return [int(s) for s in starts + sizes[: self.rank.rank].sum(axis=0)]
        return [rank_part(int(a), int(a + t), self.rank.rank, self.rank.world)[0] for a, t in zip(starts, totals)]

    def _pipe(self, x: torch.Tensor, position: int) -> torch.Tensor:
        """On the device: the pipeline of a batch, from (B, L) float32 waveforms or (B, C, F, T) float32 features."""
        with torch.autocast(self.device.type, enabled=False), torch.no_grad():
            x = x.squeeze(1).float() / 32768.0 if self.store_params.variant == "waveform" else x.float()
            return self.pipeline(x, self.epoch, position)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """On the device: int16 waveforms -> the requested features; float16 -> float32."""
        if self.transform is not None:
            with torch.autocast(self.device.type, enabled=False), torch.no_grad():
                return self.transform(x.squeeze(1).float() / 32768.0)
        return x.float()

    def _order(self) -> np.ndarray:
        return epoch_permutation(self.n, self.cfg.seed, self.epoch) if self.cfg.shuffle else self._natural

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            x = torch.from_numpy(self._read_split())
            y = torch.from_numpy(self.labels.astype(np.int64))
            if self.mode == "device":
                x, y = x.to(self.device), y.to(self.device)
            elif self.device.type == "cuda":
                x, y = x.pin_memory(), y.pin_memory()
            self._data = (x, y)
        return self._data

    def _read_split(self) -> np.ndarray:
        """(n, *item) in the store's dtype, in example order: the store rows, one read per chunk holding
        any, each written straight into its place, then the silence examples (no second copy of a split
        that may take 40 % of memory, as concatenating the two would make)."""
        array = self.group["features"]
        x = np.empty((self.n, *array.shape[1:]), dtype=array.dtype)
        starts, chunk = self.stream.starts, array.chunks[0]  # chunk c holds rows[starts[c]:starts[c + 1]]
        for c in np.flatnonzero(np.diff(starts)):
            a, b = starts[c], starts[c + 1]
            x[a:b] = read_chunk(self.loc, array, int(c))[self.rows[a:b] - c * chunk]
        if self.silence is not None:
            x[len(self.rows) :] = self.silence
        return x

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

        yield from to_device(gather(), self.device)

    def _stream_batches(self):
        pin = self.device.type == "cuda"

        def host():
            self._stream_rows = (self.epoch, [])
            for bx, by, rows in background(self.stream.batches(self.epoch), name="speechcls-stream"):
                self._stream_rows[1].append(rows)  # before the batch is yielded: batch_rows(step) finds it
                xb, yb = torch.from_numpy(bx), torch.from_numpy(by)
                yield (xb.pin_memory(), yb.pin_memory()) if pin else (xb, yb)

        yield from to_device(host(), self.device)
