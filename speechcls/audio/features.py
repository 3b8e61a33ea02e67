"""The feature variants as torch modules: torchaudio's transforms, applied to batches.

The chapter's definitions, exactly: Spectrogram(n_fft 512, win_length 480, hop_length 160,
normalized, power 2) -> (1, 257, 101); MelSpectrogram with the same STFT and 128 HTK filters without
normalization -> (1, 128, 101); power None -> real and imaginary parts as 2 channels -> (2, 257, 101).
One module serves featurize (batches of hundreds of clips, CPU or CUDA), the loader's on-device
features from a waveform store and predict.
"""

from __future__ import annotations

import warnings

import torch
import torchaudio

from speechcls.config import FeatureParams

# torchaudio warns that one of 128 mel filters is all zero at n_fft 512: expected with the chapter's
# setting (the lowest filters are narrower than one Fourier bin); the store records it instead.
EMPTY_MEL_FILTER = "At least one mel filterbank has all zero values"


def make_transform(params: FeatureParams) -> torch.nn.Module:
    """The torchaudio transform that defines `params.variant` (identity-free: not for waveform)."""
    stft = dict(
        n_fft=params.n_fft, win_length=params.win_length, hop_length=params.hop_length, normalized=params.normalized
    )
    if params.variant == "mel":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=EMPTY_MEL_FILTER)
            return torchaudio.transforms.MelSpectrogram(
                sample_rate=params.sample_rate, f_min=params.f_min, f_max=params.f_max, n_mels=params.n_mels,
                power=2.0, **stft,
            )  # fmt: skip
    if params.variant in ("spectrogram", "complex"):
        return torchaudio.transforms.Spectrogram(power=2.0 if params.variant == "spectrogram" else None, **stft)
    raise ValueError(f"variant {params.variant!r} has no spectral transform")


def empty_mel_filters(params: FeatureParams) -> int:
    """How many mel filters are all zero for these settings (1 of 128 at n_fft 512)."""
    if params.variant != "mel":
        return 0
    return int((make_transform(params).mel_scale.fb.abs().sum(0) == 0).sum())


def to_pcm16(wave: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1) -> int16; exact for audio that was 16-bit PCM to begin with."""
    return (wave * 32768.0).round_().clamp_(-32768, 32767).to(torch.int16)


class FeatureExtractor(torch.nn.Module):
    """(B, L) float32 waveforms -> (B, C, F, T) features (float32), or (B, 1, L) int16 for waveform."""

    def __init__(self, params: FeatureParams):
        super().__init__()
        self.params = params.validate()
        self.transform = None if params.variant == "waveform" else make_transform(params)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return to_pcm16(wave).unsqueeze(1)  # (B, 1, L)
        x = self.transform(wave)  # (B, F, T), complex for the complex variant
        if x.is_complex():
            return torch.view_as_real(x).permute(0, 3, 1, 2)  # (B, F, T, 2) -> (B, 2, F, T): real, imag
        return x.unsqueeze(1)  # (B, 1, F, T)
