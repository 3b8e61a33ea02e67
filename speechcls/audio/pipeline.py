"""The batch on the training device -> the model's input: the loader's per-batch hook.

    waveform store: (B, L) waveform -> [speed -> time shift -> noise] -> features -> log / standardize -> [masks]
    feature store:  (B, C, F, T) features ------------------------> log / standardize -> [masks]

The bracketed steps are augmentation (speechcls/audio/augment.py): applied in training mode only, so
`pipeline.eval()` gives validation and test the plain features, and each example's augmentation is a
function of (seed, epoch, position). Everything runs without autograd and with autocast off, so the
features are float32 whatever precision the model trains in.
"""

from __future__ import annotations

import numpy as np
import torch

from speechcls.audio.augment import (
    AugmentConfig,
    batch_rng,
    draw_bands,
    draw_noise,
    draw_shifts,
    draw_speeds,
    mask_bands,
    mix_noise,
    speed_factors,
    speed_perturb,
    time_shift,
    to_device,
)
from speechcls.audio.features import FeatureExtractor
from speechcls.audio.frontend import InputSpec, InputTransform


class Pipeline(torch.nn.Module):
    """`pipeline(x, epoch, position)` -> the model's input (B, C, F, T) float32.

    extractor: computes the features from a waveform store's batches; None for a feature store.
    input_spec: log compression and standardization (InputTransform).
    augment: what training applies (None: nothing). Shift and noise need a waveform store.
    noise: 1-D float recordings at the clips' sample rate, each at least one clip long, for noise
        mixing (the training split's background noise); needed when augment.noise_prob > 0.
    seed: the run's seed; with (epoch, position) it fixes every random number of a batch.

    The noise recordings and the transforms' windows and filters are buffers: `.to(device)` moves them.
    """

    def __init__(
        self,
        extractor: FeatureExtractor | None,
        input_spec: InputSpec,
        augment: AugmentConfig | None = None,
        noise: list[torch.Tensor] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        augment = (augment or AugmentConfig()).validate()
        batch_rng(seed, 0, 0, "shift")  # refuses a seed that cannot seed the generators, now rather than mid-epoch
        if extractor is not None and extractor.transform is None:
            raise ValueError(
                "the waveform variant gives int16 samples, not features: build the extractor with the variant the "
                "model sees (spectrogram, mel or complex)"
            )
        if extractor is None and augment.on_waveform:
            raise ValueError(_feature_store(augment))
        self.extractor = extractor
        self.input = InputTransform(input_spec)
        self.augment = augment
        self.seed = int(seed)
        rate = extractor.params.sample_rate if extractor is not None else 0
        self.rate = rate
        self.max_shift = round(augment.shift_ms * rate / 1000)  # samples
        self.noise_lengths = np.zeros(0, dtype=np.int64)  # (R,) samples per recording, for the CPU draws
        self.register_buffer("noise", torch.zeros(0), persistent=False)  # (N,) all recordings end to end
        if augment.noise_prob > 0:
            self._set_noise(noise or [], extractor.params.clip_samples)

    def _set_noise(self, noise: list[torch.Tensor], clip: int) -> None:
        if not noise:
            raise ValueError(
                f"noise_prob {self.augment.noise_prob} needs background-noise recordings (the tree's "
                "_background_noise_ folder), and none were given: pass noise, or set noise_prob 0"
            )
        for i, r in enumerate(noise):
            if r.dim() != 1 or not r.is_floating_point():
                raise ValueError(
                    f"noise recording {i} has shape {tuple(r.shape)} and dtype {r.dtype}: "
                    "each must be 1-D float samples in [-1, 1]"
                )
            if len(r) < clip:
                raise ValueError(
                    f"noise recording {i} has {len(r)} samples, shorter than one clip ({clip}): drop it or pad it"
                )
        bank = torch.cat([r.detach().float().cpu() for r in noise])
        if not torch.isfinite(bank).all():
            raise ValueError("the noise recordings hold non-finite samples (NaN or inf): check the files")
        self.noise = bank.to(self.noise.device)
        self.noise_lengths = np.array([len(r) for r in noise], dtype=np.int64)

    def rng(self, epoch: int, position: int, stream: str) -> np.random.Generator:
        """The generator of one kind of augmentation ("speed", "shift", "noise", "masks", "mixup") for a batch."""
        return batch_rng(self.seed, epoch, position, stream)

    def mixup_rng(self, epoch: int, position: int) -> np.random.Generator:
        """For `augment.mixup(x, y, self.augment.mixup, rng)` on this batch, as deterministic as the rest."""
        return self.rng(epoch, position, "mixup")

    @torch.no_grad()
    def forward(self, x: torch.Tensor, epoch: int, position: int) -> torch.Tensor:
        """x: (B, L) float32 waveform in [-1, 1) for a waveform store, or (B, C, F, T) float32 features
        for a feature store, on the training device; epoch and position (the batch's first example in
        the epoch's order, over all ranks) seed its augmentation. Returns (B, C, F, T) float32."""
        if not x.is_floating_point():
            raise ValueError(
                f"a batch of dtype {x.dtype}: the pipeline takes float waveforms in [-1, 1) (int16 / 32768) or float "
                "features"
            )
        aug = self.augment if self.training else AugmentConfig()
        with torch.autocast(x.device.type, enabled=False):
            if x.dim() == 2:
                if self.extractor is None:
                    raise ValueError(
                        f"a waveform batch {tuple(x.shape)} reached a pipeline without a feature extractor: "
                        "build it with FeatureExtractor(params) for a waveform store"
                    )
                x = self._waveform(x.float(), aug, epoch, position)
                x = self.extractor(x)  # (B, C, F, T)
            elif x.dim() == 4:
                if aug.on_waveform:
                    raise ValueError(_feature_store(aug))
                x = x.float()
            else:
                raise ValueError(
                    f"a batch of shape {tuple(x.shape)}: expected (B, L) waveforms or (B, C, F, T) features"
                )
            x = self.input(x)
            if aug.masks:
                rng = self.rng(epoch, position, "masks")
                b, _, f, t = x.shape
                # frequency bands first, then time, from one generator; drawn on the CPU, one copy each
                freq = draw_bands(rng, b, aug.freq_masks, aug.freq_width, f) if aug.freq_masks else None
                time = draw_bands(rng, b, aug.time_masks, aug.time_width, t) if aug.time_masks else None
                x = mask_bands(x, *(None if d is None else to_device(d, x.device) for d in (freq, time)))
        return x

    def _waveform(self, wave: torch.Tensor, aug: AugmentConfig, epoch: int, position: int) -> torch.Tensor:
        """Speed, then time shift, then noise (TensorFlow's order for the last two), on (B, L) float32."""
        b, n = wave.shape
        if aug.speed > 0:
            choice = draw_speeds(self.rng(epoch, position, "speed"), b)
            wave = speed_perturb(wave, choice, speed_factors(aug.speed), self.rate)
        if aug.shift_ms > 0 and self.max_shift > 0:
            shifts = draw_shifts(self.rng(epoch, position, "shift"), b, self.max_shift)
            wave = time_shift(wave, to_device(shifts, wave.device), self.max_shift)
        if aug.noise_prob > 0:
            if n > self.noise_lengths.min():
                raise ValueError(
                    f"clips of {n} samples are longer than the shortest noise recording "
                    f"({self.noise_lengths.min()} samples): give recordings at least one clip long"
                )
            starts, volumes = draw_noise(
                self.rng(epoch, position, "noise"), b, n, self.noise_lengths, aug.noise_prob, aug.noise_volume
            )
            wave = mix_noise(wave, self.noise, to_device(starts, wave.device), to_device(volumes, wave.device))
        return wave


def _feature_store(aug: AugmentConfig) -> str:
    return (
        f"speed perturbation (speed {aug.speed}), time shift (shift_ms {aug.shift_ms}) and noise mixing (noise_prob "
        f"{aug.noise_prob}) change the waveform, and a feature store holds none: featurize with --variant waveform "
        "(features are then computed per batch on the device), or set speed 0, shift_ms 0 and noise_prob 0"
    )
