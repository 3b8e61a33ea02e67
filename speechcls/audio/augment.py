"""Augmentation on the training device, per batch: time shift and background noise on waveforms,
SpecAugment's frequency and time masks on features, mixup on the model's input.

Determinism. Every random number an example's augmentation uses is drawn on the CPU from
`np.random.default_rng([seed, epoch, position, stream])` (`position`: the index of the batch's first
example in the epoch's order, over all ranks; one stream per kind of augmentation, so turning one on or
off leaves the others' draws alone): a few numbers per example, copied to the device in one small
transfer per kind. The device then applies them to the whole batch at once (strided gathers, a
compare and a torch.where), with no Python loop over the examples. So an example's augmentation is a
function of (seed, epoch, position) only: the same on every run, the same on a resumed run as on an
uninterrupted one, and the same shifts, crops and bands on the CPU as on CUDA.

Written by hand (a few lines each) rather than taken from a library, because neither library can
follow a per-batch generator:
- torchaudio 2.11's `mask_along_axis_iid` (behind `FrequencyMasking(iid_masks=True)`) draws with
  `torch.rand(..., device=specgrams.device)` from the global generator and takes no generator. Seeding
  it per batch needs `torch.random.fork_rng` + `manual_seed` around each call (cheap: about 0.1 ms on
  the CPU), but the bands then come from CUDA's Philox generator on CUDA and the CPU's Mersenne Twister
  on the CPU, so a CUDA run's masks cannot be reproduced or checked on the CPU; it also draws each
  channel's band separately (complex features would get different bands for their real and imaginary
  parts) and widths in [0, mask_param - 1] rather than SpecAugment's [0, F]. Here the bands are drawn
  as (start, width) pairs and every channel of an example shares them.
- torch-audiomentations 0.12 (`Shift`, `AddBackgroundNoise`) draws from torch's global generator and
  Python's `random` module with no generator argument; `AddBackgroundNoise` reads a file from disk per
  example in a Python loop and mixes at a signal-to-noise ratio relative to the clip's RMS, not at
  TensorFlow's absolute volume; `Shift`'s CPU path loops over the examples with `torch.roll`.

The recipe is TensorFlow's speech_commands `input_data.py` (Warden 2018), which BC-ResNet's training
code follows: shift the clip (zeros filled in, not rolled), add `volume * crop` of a background-noise
recording, clamp to [-1, 1], then features; SpecAugment (Park et al. 2019) on the log features. A masked bin is
set to 0: the training split's mean where the features are standardized (the paper's choice, and
torchaudio's default value), plain 0 in log units where they are not (BC-ResNet's).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

# one generator per kind of augmentation and batch: np.random.default_rng([seed, epoch, position, stream])
STREAMS = {"shift": 0, "noise": 1, "masks": 2, "mixup": 3, "speed": 4}

# speed perturbation's factors: SPEED_STEPS evenly spaced in [1 - speed, 1 + speed], 1 among them
SPEED_STEPS = 5


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations training applies, and how strongly. Everything is off by default; the
    comments give the published settings for keyword spotting on Speech Commands."""

    # speed perturbation (Ko et al. 2015, Kaldi's 0.9 / 1.0 / 1.1): each clip played faster or slower by a
    # factor drawn uniformly from SPEED_STEPS values evenly spaced in [1 - speed, 1 + speed] (0.1: 0.9,
    # 0.95, 1, 1.05, 1.1), which moves pitch and formants together, as a different speaker would; then
    # centred in the clip (padded with zeros or cropped). Not in the published KWS recipes; 0 = off
    speed: float = 0.0
    # TensorFlow's --time_shift_ms 100 (BC-ResNet: the same): each clip moved by a whole number of
    # samples drawn uniformly in [-shift, +shift], positive = later; zeros fill the gap, nothing wraps
    shift_ms: float = 0.0
    # TensorFlow's --background_frequency 0.8 (BC-ResNet: the same): the chance that a clip gets noise
    noise_prob: float = 0.0
    # TensorFlow's --background_volume 0.1 (BC-ResNet: the same): a noisy clip gets volume * crop with
    # volume uniform in [0, noise_volume] and crop a random one-clip stretch of a random recording
    noise_volume: float = 0.0
    # SpecAugment's frequency masks per example (Park et al. 2019 LibriSpeech policies: 1 or 2;
    # BC-ResNet on 40 log-mels: 2), each of width uniform in [0, freq_width] bins (LibriSpeech: 27 of
    # 80; BC-ResNet: 7 of 40)
    freq_masks: int = 0
    freq_width: int = 0
    # SpecAugment's time masks per example (LibriSpeech: 1 or 2 of width <= 100 frames; BC-ResNet: 2 of
    # width <= 20 of 101 frames)
    time_masks: int = 0
    time_width: int = 0
    # mixup's alpha: one lam ~ Beta(alpha, alpha) per batch (Zhang et al. 2018: 0.2 on ImageNet, 0.1 and
    # 0.2 on Speech Commands); 0 = off
    mixup: float = 0.0

    def validate(self) -> "AugmentConfig":
        """Refuse impossible or useless settings before any work, naming the values."""
        for name in ("speed", "shift_ms", "noise_prob", "noise_volume", "mixup"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.speed >= 0.5:
            raise ValueError(
                f"speed {self.speed} changes a clip's speed by up to {self.speed:.0%}: require 0 <= speed < 0.5 "
                "(Kaldi and Ko et al. 2015: 0.1)"
            )
        if self.noise_prob > 1:
            raise ValueError(f"noise_prob is a probability: require 0 <= noise_prob <= 1, got {self.noise_prob}")
        if self.noise_prob > 0 and self.noise_volume == 0:
            raise ValueError(
                f"noise_prob {self.noise_prob} with noise_volume 0 would mix silence: set noise_volume "
                "(TensorFlow's recipe: 0.1) or noise_prob 0"
            )
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {v!r}")
        for axis in ("freq", "time"):
            if getattr(self, f"{axis}_masks") > 0 and getattr(self, f"{axis}_width") == 0:
                raise ValueError(
                    f"{axis}_masks {getattr(self, f'{axis}_masks')} with {axis}_width 0 masks nothing: set "
                    f"{axis}_width (BC-ResNet: {7 if axis == 'freq' else 20}) or {axis}_masks 0"
                )
        return self

    @property
    def on_waveform(self) -> bool:
        """Whether any augmentation needs the waveform (speed, shift, noise): a waveform store only."""
        return self.speed > 0 or self.shift_ms > 0 or self.noise_prob > 0

    @property
    def masks(self) -> bool:
        return self.freq_masks > 0 or self.time_masks > 0

    @property
    def off(self) -> bool:
        return not (self.on_waveform or self.masks or self.mixup > 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "AugmentConfig":
        """The config saved in a run; None (a run from before augmentation existed) is all off."""
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})


def check_mask_widths(freq_width: int, time_width: int, shape: tuple) -> None:
    """SpecAugment's widths against the model input they mask, (C, F, T): a band wider than the bins or the
    frames is no mask the option's user meant (ValueError naming the option and its range)."""
    _, bins, frames = shape
    for option, width, size, what in (
        ("--freq-width", freq_width, bins, "bins"),
        ("--time-width", time_width, frames, "frames"),
    ):
        if not 0 <= width <= size:
            raise ValueError(
                f"{option} {width}: the features have {size} {what}, so a mask is 0 to {size} {what} wide; choose "
                f"{option} in [0, {size}]"
            )


def batch_rng(seed: int, epoch: int, position: int, stream: str) -> np.random.Generator:
    """The generator of one kind of augmentation (`stream`, a key of STREAMS) for the batch whose first
    example is at `position` of `epoch`'s order: its draws are a function of these four values only."""
    for name, v in (("seed", seed), ("epoch", epoch), ("position", position)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a whole number >= 0 to seed the augmentation, got {v!r}")
    return np.random.default_rng([int(seed), int(epoch), int(position), STREAMS[stream]])


# --- draws: on the CPU, a few numbers per example -------------------------------------------------------
def draw_shifts(rng: np.random.Generator, batch: int, max_shift: int) -> np.ndarray:
    """(B,) int64 shifts in samples, uniform in [-max_shift, max_shift] (positive = later)."""
    return rng.integers(-max_shift, max_shift, size=batch, endpoint=True, dtype=np.int64)


def speed_factors(speed: float, steps: int = SPEED_STEPS) -> np.ndarray:
    """The factors speed perturbation draws from: `steps` values evenly spaced in [1 - speed, 1 + speed]."""
    return np.linspace(1.0 - speed, 1.0 + speed, steps)


def draw_speeds(rng: np.random.Generator, batch: int, steps: int = SPEED_STEPS) -> np.ndarray:
    """(B,) int64: which of the `steps` factors each example gets, uniformly."""
    return rng.integers(0, steps, size=batch, dtype=np.int64)


def draw_noise(
    rng: np.random.Generator, batch: int, clip: int, lengths: np.ndarray, prob: float, volume: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which stretch of background noise each example gets, and how loud, as TensorFlow's input_data.py:
    a recording chosen uniformly, a crop start uniform over the starts that fit a `clip`-sample crop,
    volume uniform in [0, `volume`] with chance `prob`, else 0.

    lengths: (R,) samples of each recording, concatenated in this order (see `NoiseBank`).
    Returns (starts (B,) int64 into the concatenation, volumes (B,) float32)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rec = rng.integers(0, len(lengths), size=batch)
    within = rng.integers(0, lengths[rec] - clip, endpoint=True)  # (B,): every start whose crop fits
    mixed = rng.random(batch) < prob
    volumes = np.where(mixed, rng.uniform(0.0, volume, size=batch), 0.0).astype(np.float32)
    return offsets[rec] + within, volumes


def draw_bands(rng: np.random.Generator, batch: int, count: int, width: int, size: int) -> np.ndarray:
    """SpecAugment's masks along an axis of `size` bins: `count` bands per example, each of width w
    uniform in [0, min(width, size)] and start uniform in [0, size - w]. Returns (B, count, 2) int64
    (start, width); bands may overlap, as in the paper."""
    w = rng.integers(0, min(width, size), size=(batch, count), endpoint=True)
    start = rng.integers(0, size - w, endpoint=True)
    return np.stack([start, w], axis=-1).astype(np.int64)


def to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """A drawn array as a tensor on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        # pinned + non_blocking: a copy from pageable memory would make the host wait for the stream
        # (a sync point per batch); the caching host allocator keeps the block until the copy is done
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# --- application: on the device, the whole batch at once --------------------------------------------------
def time_shift(wave: torch.Tensor, shifts: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each example moved by its shift, zeros filled in (not rolled): out[b, t] = wave[b, t - shifts[b]]
    where 0 <= t - shifts[b] < L, else 0.

    wave: (B, L) float; shifts: (B,) int64 on wave's device, |shift| <= max_shift. Returns (B, L)."""
    b, n = wave.shape
    zeros = wave.new_zeros(b, max_shift)
    padded = torch.cat([zeros, wave, zeros], 1)  # (B, L + 2S); one write (F.pad fills, then copies)
    windows = padded.unfold(1, n, 1)  # (B, 2S + 1, L) view: window k is wave[k - S : k - S + L], zero-padded
    return windows[torch.arange(b, device=wave.device), max_shift - shifts]  # one gather, no (B, L) index


def speed_perturb(wave: torch.Tensor, choice: np.ndarray, factors: np.ndarray, rate: int) -> torch.Tensor:
    """Each example played `factors[choice[b]]` times as fast (> 1: shorter and higher), by
    torchaudio's band-limited resampling from rate * factor to rate Hz (the factor rounded to a whole
    number of Hz), then centred in the clip's L samples: zeros around a shorter one, a longer one's
    middle kept. One resampling call per factor in use, on the examples that drew it.

    wave: (B, L) float; choice: (B,) int64 indices into factors, on the CPU; factors: (K,) float;
    rate: the clips' sample rate. Returns (B, L), a new tensor (wave is left alone)."""
    import torchaudio.functional as AF

    n = wave.shape[1]
    out = wave.clone()
    for k in np.unique(choice):
        orig = round(rate * float(factors[k]))
        if orig == rate:
            continue
        rows = to_device(np.flatnonzero(choice == k), wave.device)
        moved = AF.resample(wave[rows], orig_freq=orig, new_freq=rate)  # (b_k, m), m ~ n / factor
        m = moved.shape[1]
        if m >= n:
            start = (m - n) // 2
            out[rows] = moved[:, start : start + n]
        else:
            left = (n - m) // 2
            out[rows] = torch.nn.functional.pad(moved, (left, n - m - left))
    return out


def mix_noise(wave: torch.Tensor, bank: torch.Tensor, starts: torch.Tensor, volumes: torch.Tensor) -> torch.Tensor:
    """wave + volumes * bank[starts : starts + L] per example, clamped to [-1, 1] (the clip's range).

    wave: (B, L) float32; bank: (N,) float32 recordings end to end; starts: (B,) int64 with
    starts + L <= N; volumes: (B,) float32 (0 = no noise). Returns (B, L)."""
    crops = bank.unfold(0, wave.shape[1], 1)[starts]  # (N - L + 1, L) view -> (B, L)
    return torch.addcmul(wave, volumes[:, None], crops).clamp_(-1.0, 1.0)  # 2 passes, not 3 (mul, add)


def band_mask(bands: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Which bins of an axis of `size` the bands cover: bands (B, n, 2) int64 (start, width) -> bool
    (B, 1, size, 1) for dim 2 (frequency) or (B, 1, 1, size) for dim 3 (time) of (B, C, F, T)."""
    if dim not in (2, 3):
        raise ValueError(f"masks go along dim 2 (frequency) or 3 (time) of (B, C, F, T), got dim {dim}")
    pos = torch.arange(size, device=bands.device)  # (size,)
    start, end = bands[..., 0:1], bands[..., 0:1] + bands[..., 1:2]  # (B, n, 1)
    covered = ((pos >= start) & (pos < end)).any(1)  # (B, size)
    return covered[:, None, :, None] if dim == 2 else covered[:, None, None, :]


def mask_bands(
    x: torch.Tensor, freq: torch.Tensor | None = None, time: torch.Tensor | None = None, value: float = 0.0
) -> torch.Tensor:
    """SpecAugment's masks: the bins of each example's frequency bands and time bands set to `value`, in
    every channel. One pass over x (torch.where), never in place: x may be the loader's resident data.

    x: (B, C, F, T); freq, time: (B, n, 2) int64 (start, width) on x's device, or None. Returns (B, C, F, T)."""
    masks = [band_mask(b, x.shape[d], d) for b, d in ((freq, 2), (time, 3)) if b is not None]
    if not masks:
        return x
    return torch.where(masks[0] | masks[1] if len(masks) == 2 else masks[0], value, x)


@torch.no_grad()
def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """mixup (Zhang et al. 2018) of a batch with a permutation of itself: one lam ~ Beta(alpha, alpha)
    for the batch and the permutation, both drawn from `rng` (`Pipeline.mixup_rng(epoch, position)`).

    x: (B, ...) float model input; y: (B,) int64 labels. Returns (x_mixed, y_a, y_b, lam) with
    x_mixed = lam * x + (1 - lam) * x[perm], y_a = y, y_b = y[perm]; the trainer's loss is
    `lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)`. alpha 0 is off:
    (x, y, y, 1.0), with nothing drawn."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"mixup alpha must be a finite number >= 0, got {alpha!r}")
    if alpha == 0:
        return x, y, y, 1.0
    lam = float(rng.beta(alpha, alpha))
    perm = to_device(rng.permutation(x.shape[0]), x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam
