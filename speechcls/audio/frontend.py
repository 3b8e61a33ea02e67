"""What sits between the features and the model: log compression and per-frequency standardization.

Computed at load time on the training device, so every existing store (power spectrogram, mel) keeps
working: `log(x + eps)` of a power variant, then `(x - mean) / std` with one mean and one standard
deviation per (channel, frequency bin), taken over the training split (every example and frame). The
spec is saved in the run (config.json and every checkpoint), so evaluate, predict and export apply
exactly what training applied. Plain tensor ops only (log, sub, div): the module exports to ONNX as is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch

LOG_EPS = 1e-6  # BC-ResNet's LogMel (log(mel + 1e-6)); below the quietest bin of 16-bit speech


@dataclass(frozen=True)
class InputSpec:
    """How features become the model's input. mean / std: (C, F) nested lists, or None (no standardization)."""

    log: bool = False
    eps: float = LOG_EPS
    mean: tuple | None = None  # (C, F): per channel and frequency bin, over the training split
    std: tuple | None = None
    # then each example's own mean over time subtracted, per channel and bin (cepstral / channel mean
    # normalization): a microphone's or a room's fixed colouring is a constant per bin in log units
    cmn: bool = False

    @property
    def identity(self) -> bool:
        return not self.log and self.mean is None and not self.cmn

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "InputSpec":
        """The spec saved in a run; None (a run from before log features existed) is the identity."""
        if not d:
            return cls()
        mean, std = d.get("mean"), d.get("std")
        log, eps = bool(d.get("log", False)), float(d.get("eps", LOG_EPS))
        return cls(log, eps, _tuple(mean), _tuple(std), bool(d.get("cmn", False)))


def _tuple(x):
    return None if x is None else tuple(tuple(float(v) for v in row) for row in x)


class InputTransform(torch.nn.Module):
    """(B, C, F, T) float32 features -> the model's input, same shape. Identity for the chapter's recipe."""

    def __init__(self, spec: InputSpec = InputSpec()):
        super().__init__()
        self.spec = spec
        self.log = spec.log
        self.eps = spec.eps
        self.cmn = spec.cmn
        if spec.mean is not None and spec.std is not None:
            self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32)[None, :, :, None])  # (1, C, F, 1)
            self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32)[None, :, :, None])
        else:
            self.mean = self.std = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.log:
            x = torch.log(x + self.eps)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.cmn:
            x = x - x.mean(-1, keepdim=True)  # over the frames: (B, C, F, 1)
        return x


def check_log(variant: str, log: bool) -> None:
    """log(x + eps) needs a power variant: complex features are signed (real and imaginary parts)."""
    if log and variant not in ("spectrogram", "mel"):
        raise ValueError(
            f"--log needs a power variant (spectrogram or mel); {variant!r} features are signed. Train the complex "
            "variant without --log, or train from a waveform store with --features mel"
        )


@torch.no_grad()
def stats_sums(batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """(3, C, F) float64 on the batches' device: per (channel, frequency bin) the sum, the sum of squares
    and the count of values over every example and frame of `batches` ((B, C, F, T) tensors, already
    log-compressed where the run uses log). Sums, so the ranks of a distributed run can add theirs."""
    acc = None
    for x in batches:
        x = x.double()
        part = torch.stack(
            [x.sum(dim=(0, 3)), (x * x).sum(dim=(0, 3)), torch.full_like(x[0, :, :, 0], x.shape[0] * x.shape[3])]
        )
        acc = part if acc is None else acc + part
    if acc is None:
        raise ValueError("no training examples to take feature statistics from")
    return acc


STD_FLOOR = 0.1  # of the median bin's standard deviation: the least a bin is divided by


def finish_stats(sums: torch.Tensor, floor: float = STD_FLOOR, min_std: float = 1e-5) -> tuple[list, list]:
    """Mean and standard deviation (C, F nested lists) from `stats_sums`. Each bin's standard deviation
    is floored at `floor` x the median bin's (and at `min_std`): a bin that barely varies carries no signal,
    only what sits at the log's eps (an all-zero mel filter; the bands above 4 kHz of audio recorded at
    8 kHz, where resampling residue would otherwise be scaled up 15-50x: measured on FSDD, where it cost an
    unseen speaker's accuracy), and dividing by its tiny spread would make that residue as loud as speech."""
    total, sq, n = sums.double()
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(0.0).sqrt()
    std = std.clamp_min(max(floor * float(std.median()), min_std))
    return mean.cpu().tolist(), std.cpu().tolist()


def feature_stats(batches: Iterable[torch.Tensor], floor: float = STD_FLOOR) -> tuple[list, list]:
    """Mean and standard deviation per (channel, frequency bin) over every example and frame of `batches`."""
    return finish_stats(stats_sums(batches), floor)
