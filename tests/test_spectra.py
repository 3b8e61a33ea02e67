"""audio/spectra.py: featurize's CPU spectra are torchaudio's, bit for bit, for every spectral variant,
batch size and stored dtype, on real speech and on edge signals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from speechcls.audio.features import FeatureExtractor
from speechcls.audio.spectra import CpuSpectra, supports
from speechcls.config import FeatureParams


def _real_waves(root, n: int) -> torch.Tensor:
    waves = np.zeros((n, 16000), np.float32)
    for i, path in enumerate(sorted(root.glob("*/*.wav"))[:n]):
        audio, _ = sf.read(path, dtype="float32")
        waves[i, : min(16000, len(audio))] = audio[:16000]
    return torch.from_numpy(waves)


def _edge_waves() -> torch.Tensor:
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 16000
    return torch.from_numpy(
        np.stack([
            np.zeros(16000), np.full(16000, 0.999), np.sin(2 * np.pi * 1000 * t), rng.uniform(-1, 1, 16000),
            rng.standard_normal(16000) * 1e-6, np.where(np.arange(16000) == 8000, 1.0, 0.0),
        ]).astype(np.float32)
    )  # fmt: skip


@pytest.mark.parametrize("variant", ["spectrogram", "mel", "complex"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_spectra_are_torchaudios_bit_for_bit(mini_root, variant, dtype):
    params = FeatureParams(variant, dtype=dtype)
    reference = FeatureExtractor(replace(params, dtype="float32"))
    spectra = CpuSpectra(params)
    waves = torch.cat([_real_waves(mini_root, 40), _edge_waves()])
    torch_dtype = torch.float16 if dtype == "float16" else torch.float32
    with torch.inference_mode():
        want = reference(waves).to(torch_dtype)
    for batch in (1, 7, 32, len(waves)):  # the same numbers whatever the batch (featurize's sub-batches)
        out = torch.full((len(waves), *params.shape), float("nan"), dtype=torch_dtype)
        for i in range(0, len(waves), batch):
            spectra(waves[i : i + batch], out[i : i + batch])
        assert torch.equal(out, want), (variant, dtype, batch)


def test_other_settings_and_waveform_are_not_served():
    assert supports(FeatureParams("complex")) and not supports(FeatureParams("waveform"))
    with pytest.raises(ValueError, match="waveform"):
        CpuSpectra(FeatureParams("waveform"))


@pytest.mark.parametrize("variant", ["spectrogram", "mel", "complex"])
def test_other_stft_settings_stay_torchaudios(variant):
    params = replace(FeatureParams(variant), n_fft=400, win_length=300, hop_length=128, normalized=False)
    waves = _edge_waves()
    with torch.inference_mode():
        want = FeatureExtractor(params)(waves)
    out = torch.empty((len(waves), *params.shape))
    CpuSpectra(params)(waves, out)
    assert torch.equal(out, want)
