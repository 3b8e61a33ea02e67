"""The synthetic signals synth mixes into its clips and tools/make_tree.py into its trees: coloured noise
(white, pink, brown), a simple room's impulse response and the FFT convolution through it, and PCM16.
In numpy, a few lines each: no sox binary to install, and every draw from the generator the caller
passes, so a seed gives the same bytes."""

from __future__ import annotations

import numpy as np

ROOM_RT60 = (0.15, 0.6)  # seconds for the reverberation to fall 60 dB: a small office to a living room
ROOM_WET = (0.2, 0.6)  # share of the reverberant sound in the mix


def room(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A simple room's impulse response: 1 (the direct sound), then noise whose envelope falls 60 dB in an
    RT60 drawn from ROOM_RT60, scaled so that it is a wet share drawn from ROOM_WET of the energy.
    Returns: (min(n, RT60 x rate),) float32."""
    rt60 = rng.uniform(*ROOM_RT60)
    wet = rng.uniform(*ROOM_WET)
    length = min(n, max(2, int(rt60 * rate)))
    t = np.arange(1, length) / rate
    tail = rng.standard_normal(length - 1) * np.exp(-6.9078 * t / rt60)  # ln(1000): -60 dB at rt60
    tail *= np.sqrt(wet / (1 - wet) / max(float(np.sum(tail**2)), 1e-12))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def reverberate(clip: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """`clip` through the room `ir` (an FFT convolution), cut to the clip's length, at the clip's peak."""
    n = len(clip) + len(ir) - 1
    size = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(clip, size) * np.fft.rfft(ir, size), size)[: len(clip)]
    peak = float(np.abs(out).max())
    return (out * (float(np.abs(clip).max()) / peak) if peak > 0 else out).astype(np.float32)


def colored_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1/f**slope (0 white, 1 pink, 2 brown), peak 0.5."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    noise = np.fft.irfft(spectrum / f ** (slope / 2), n)
    return (0.5 * noise / np.abs(noise).max()).astype(np.float32)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
