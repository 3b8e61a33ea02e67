"""The chapter's spectra on the CPU, computed straight into the caller's rows: featurize's CPU path.

torchaudio's transforms (features.py) stay the definition and serve everything else (the loader's
on-device features, predict, export, CUDA featurize). Here the same operations run, in the same order
and on the same values, so the numbers are bit for bit torchaudio's (tests/test_spectra.py holds them
equal on real speech), with less around them:

    reflect pad, frames x window, rfft of each frame (MKL on this build): each into a reused buffer
    -> x (1 / the window's norm) on the real and imaginary parts: what torch's complex division by a
       real number computes, bit for bit, at a tenth of its time (its complex kernel: ~65 us a clip)
    -> complex: the real and imaginary planes copied into `out` (the one transposing copy)
       spectrogram: |X| squared into `out`; mel: the filter bank's matmul, then into `out`

torch.stft, which the transforms call, frames the batch in a new tensor each call and divides in the
complex kernel; the store's layout then costs featurize a copy of its own. Not a library's job: none
computes these spectra into a given buffer. Only the settings torchaudio's transforms take from
FeatureParams are served (a periodic Hann window centred in n_fft, centred frames, reflect padding).
"""

from __future__ import annotations

import torch

from speechcls.config import FeatureParams

VARIANTS = ("spectrogram", "mel", "complex")


def supports(params: FeatureParams) -> bool:
    """Can CpuSpectra compute `params`' features (a spectral variant, a window no longer than the FFT)?"""
    return params.variant in VARIANTS and params.win_length <= params.n_fft


class CpuSpectra:
    """(B, L) float32 waveforms -> `out` (B, C, F, T) in place, in out's dtype (float32 or float16).
    One instance per thread: its frame buffer is reused from call to call."""

    def __init__(self, params: FeatureParams):
        if not supports(params):
            raise ValueError(f"CpuSpectra does not compute {params.variant!r} features")
        from speechcls.audio.features import make_transform

        self.params = params
        transform = make_transform(params)
        stft = transform.spectrogram if params.variant == "mel" else transform
        window = stft.window.to(torch.float32)  # torchaudio's own window (periodic Hann of win_length)
        left = (params.n_fft - params.win_length) // 2  # torch.stft centres a shorter window in n_fft
        self.window = torch.zeros(params.n_fft)
        self.window[left : left + params.win_length] = window
        # torchaudio's "window" norm: the spectrum divided by sqrt(sum(window ** 2)), a 0-dim tensor
        self.inverse_norm = torch.reciprocal(window.pow(2.0).sum().sqrt()) if params.normalized else None
        self.fb = transform.mel_scale.fb if params.variant == "mel" else None  # (F, n_mels)
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """The reused buffer `name` of `shape` (made anew when a call's batch differs)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = self._buffers[name] = torch.empty(shape, dtype=dtype)
        return buf

    def _spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T, F) complex: the FFT of each windowed frame, divided by the window's norm; in buffers reused
        from call to call (a fresh 6 MB tensor a call cost its page faults, in the kernel's time)."""
        p = self.params
        half, n = p.n_fft // 2, wave.shape[-1]
        if n <= half:  # reflect padding needs more samples than it pads: torch's own error
            raise ValueError(f"a clip of {n} samples is too short for n_fft {p.n_fft} (reflect padding)")
        x = self._buffer("padded", (len(wave), n + 2 * half), torch.float32)
        x[:, half : half + n] = wave  # F.pad(mode="reflect"), written into the buffer
        x[:, :half] = wave[:, 1 : half + 1].flip(-1)
        x[:, half + n :] = wave[:, n - half - 1 : n - 1].flip(-1)
        frames = x.unfold(-1, p.n_fft, p.hop_length)  # (B, T, n_fft), a view of overlapping frames
        windowed = self._buffer("frames", frames.shape, torch.float32)
        torch.mul(frames, self.window, out=windowed)
        spectrum = self._buffer("spectrum", (*frames.shape[:2], p.n_fft // 2 + 1), torch.complex64)
        torch.fft.rfft(windowed, dim=-1, out=spectrum)
        if self.inverse_norm is not None:
            torch.view_as_real(spectrum).mul_(self.inverse_norm)
        return spectrum

    def __call__(self, wave: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            spectrum = self._spectrum(wave)  # (B, T, F)
            variant = self.params.variant
            if variant == "complex":
                out.copy_(torch.view_as_real(spectrum).permute(0, 3, 2, 1))  # -> (B, 2, F, T): real, imaginary
                return out
            power = self._buffer("power", spectrum.shape, torch.float32)
            torch.abs(spectrum, out=power).pow_(2.0)  # torchaudio's power 2: |X|, then squared
            if variant == "mel":  # (B, T, n_mels): torchaudio's MelScale
                power = torch.matmul(power, self.fb, out=self._buffer("mel", (*power.shape[:2], self.fb.shape[1]),
                                                                       torch.float32))  # fmt: skip
            out[:, 0].copy_(power.transpose(1, 2))
            return out
