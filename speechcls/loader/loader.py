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
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import numpy as np
import torch

from speechcls.config import FeatureParams, LoaderConfig
from speechcls.dist import Rank
from speechcls.loader.prefetch import background, to_device
from speechcls.loader.sharding import epoch_permutation, global_bounds, shard_bounds
from speechcls.loader.stream import ChunkStream
from speechcls.runtime import available_ram
from speechcls.store.format import params_from_attrs
from speechcls.store.location import to_location
from speechcls.store.reader import open_store, read_all, read_rows, split_rows

MODES = ("device", "host", "stream")


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
    fields of `cfg`. Under torchrun pass this process's `rank`: it gets its shard of every epoch."""

    def __init__(self, store, split: str = "train", cfg: LoaderConfig | None = None, rank: Rank = Rank(), **overrides):
        cfg = replace(cfg or LoaderConfig(), **overrides)
        self.cfg = cfg = replace(cfg, shuffle=split == "train" if cfg.shuffle is None else cfg.shuffle)
        self.loc = to_location(store)
        self.group = open_store(self.loc)
        attrs = dict(self.group.attrs)
        self.classes: list[str] = attrs["classes"]
        self.store_params = params_from_attrs(attrs)
        self.rows = split_rows(self.group, split, cfg.split_kind, cfg.split_seed)
        if len(self.rows) == 0:
            raise ValueError(f"{store}: the {cfg.split_kind} {split} split holds no decoded clip")
        self.labels = read_all(self.group, "label")[self.rows]
        self.epoch = 0
        self.device = torch.device(cfg.device)
        self.rank = rank
        self.params, self.transform = self._features(cfg.features, attrs)
        feats = self.group["features"]
        item_bytes = int(np.prod(feats.shape[1:])) * feats.dtype.itemsize
        self.mode = choose_mode(item_bytes * len(self.rows), str(self.device)) if cfg.mode == "auto" else cfg.mode
        if self.mode not in MODES:
            raise ValueError(f"unknown loader mode {self.mode!r}: choose auto, device, host or stream")
        # this rank's batches as [start, end) of the epoch order; refuses a split too small for the ranks
        self.bounds = shard_bounds(len(self.rows), cfg.batch_size, rank.rank, rank.world)
        # examples of each step over all ranks (a rank's mean loss is weighted by its share of them);
        # the streaming loader's own-chunk plan changes them per epoch (see global_sizes)
        self._global_sizes = [b - a for a, b in global_bounds(len(self.rows), cfg.batch_size, rank.world)]
        self.stream = ChunkStream(self.loc, feats, self.labels, self.rows, self._global_sizes, cfg, rank)
        self._data = None
        self._stream_rows: tuple[int, list[np.ndarray]] = (-1, [])  # (epoch, store rows of each batch yielded)

    def _features(self, features: str, attrs: dict):
        """What the model sees, and the on-device transform that makes it from a waveform store."""
        if self.store_params.variant == "waveform":
            from speechcls.audio.features import FeatureExtractor

            params = FeatureParams(
                features or "spectrogram", sample_rate=attrs["sample_rate"], clip_samples=attrs["clip_samples"]
            )
            return params, FeatureExtractor(params).to(self.device)
        if features and features != self.store_params.variant:
            raise ValueError(
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
        return len(self.rows)

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
        an error about a batch names. The resident modes recompute them from the epoch order; the
        streaming mode records them as it yields, so `step` must have been yielded this epoch."""
        if self.mode != "stream":
            a, b = self.bounds[step]
            return self.rows[self._order()[a:b]]
        epoch, rows = self._stream_rows
        if epoch != self.epoch or not 0 <= step < len(rows):
            raise IndexError(f"step {step} of epoch {self.epoch} has not been streamed")
        return rows[step]

    # --- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = {"device": self._device_batches, "host": self._host_batches, "stream": self._stream_batches}[
            self.mode
        ]
        for x, y in batches():
            yield self._finish(x), y

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """On the device: int16 waveforms -> the requested features; float16 -> float32."""
        if self.transform is not None:
            with torch.autocast(self.device.type, enabled=False), torch.no_grad():
                return self.transform(x.squeeze(1).float() / 32768.0)
        return x.float()

    def _order(self) -> np.ndarray:
        return epoch_permutation(self.n, self.cfg.seed, self.epoch) if self.cfg.shuffle else np.arange(self.n)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            x = torch.from_numpy(read_rows(self.loc, self.group["features"], self.rows))
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
