"""Background-noise recordings and the silence examples cut from them (the kws12 task's `_silence_`).

Warden's rule (TF speech_commands input_data.py): a silence example is a one-second crop of a
background recording, at a uniform(0, 1) volume, clipped to [-1, 1]. Here it is deterministic: the
recording, offset and volume of silence example i of a split are drawn from
`np.random.default_rng([SILENCE_SEED, split code, i])`, so they depend on (split, i) and the
recordings only, never on the epoch, the loader mode or the rank. Every recording is cut in time
between the splits (config.NOISE_REGIONS: train [0, 0.8), validation [0.8, 0.9), test [0.9, 1.0)), and
the crops of a split come from its region only: no noise is shared between splits.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from speechcls import config

# Warden's input_data.py seeds its choices with RANDOM_SEED = 59185; ours is a fixed part of the protocol
SILENCE_SEED = 59185
FULL_SCALE = 1.0  # what a recording's samples may reach: PCM decodes into [-1, 1), a float WAV may hold anything


def noise_source(store_attrs: dict, noise_dir: str | Path = "") -> Path | None:
    """Where the background recordings are: `noise_dir` (--noise-dir) if given, else the store's tree's
    `_background_noise_` if that folder exists (here: a store made elsewhere may name a tree this
    machine lacks), else None."""
    if noise_dir:
        folder = Path(noise_dir)
        if not folder.is_dir():
            raise ValueError(f"--noise-dir {folder}: no such folder; point it at a folder of background .wav files")
        return folder
    root = (store_attrs.get("dataset") or {}).get("source_root")
    if root and (folder := Path(root) / config.BACKGROUND_DIR).is_dir():
        return folder
    return None


def looked_at(store_attrs: dict) -> str:
    """Where noise_source looks without --noise-dir: what an error names."""
    root = (store_attrs.get("dataset") or {}).get("source_root")
    return str(Path(root) / config.BACKGROUND_DIR) if root else "(the store names no source tree)"


def noise_files(folder: Path) -> list[Path]:
    """The .wav recordings of `folder` (not its subfolders), sorted by name: the order silence draws index."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() == ".wav" and p.is_file())


def read_recording(path: Path, sample_rate: int) -> np.ndarray:
    """One recording as float32 mono (the channel mean) at `sample_rate`: soundfile decodes, torchaudio's
    resample converts where the file's rate differs (audio/decode.py's two steps; written out here
    because data/ sits left of audio/ in the layout). Raises what soundfile raises for a file that is
    not audio (ValueError for a decoded file holding NaN, infinities or a sample outside [-1, 1]: mixed
    into a clip at --noise-volume, a 1e30 sample would make the loss infinite, not the clip noisy).
    Returns: (L,) float32."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if not np.isfinite(audio).all():
        raise ValueError("samples are NaN or infinite")
    peak = float(np.abs(audio).max(initial=0.0))
    if peak > FULL_SCALE:
        raise ValueError(
            f"a sample of {peak:.3g} is outside full scale [-1, 1] (a float WAV's range; PCM cannot leave it); "
            "scale the recording into [-1, 1]"
        )
    mono = audio.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        mono = AF.resample(torch.from_numpy(mono), rate, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_noise(
    folder: str | Path, sample_rate: int = config.SAMPLE_RATE, clip_samples: int = config.CLIP_SAMPLES
) -> list[np.ndarray]:
    """Every .wav recording of `folder` as float32 mono at `sample_rate`, in name order. A file that
    cannot be decoded, or shorter than one clip, is skipped with a warning naming it; none usable is a
    ValueError naming the folder.
    Returns: [(L_k,) float32, ...]."""
    folder = Path(folder)
    out = []
    for path in noise_files(folder):
        try:
            audio = read_recording(path, sample_rate)
        except Exception as e:  # LibsndfileError (not audio, a broken header), OSError, samples out of range
            warnings.warn(f"background noise {path} skipped: cannot use it ({e})", stacklevel=2)
            continue
        if len(audio) < clip_samples:
            warnings.warn(
                f"background noise {path} skipped: {len(audio)} samples at {sample_rate} Hz, under one clip "
                f"({clip_samples})",
                stacklevel=2,
            )
            continue
        out.append(audio)
    if not out:
        raise ValueError(
            f"{folder}: no usable background-noise recording (.wav files of at least one clip, {clip_samples} "
            "samples); add some, or pass --noise-dir with another folder"
        )
    return out


def split_region(recording: np.ndarray, split: str) -> np.ndarray:
    """The part of a recording that `split` may use: config.NOISE_REGIONS[split] of its length. Both
    ends are round(fraction x length), so neighbouring regions meet exactly and never overlap.
    recording: (L,) -> (L_split,), a view."""
    if split not in config.NOISE_REGIONS:
        raise ValueError(f"unknown split {split!r}: choose {', '.join(config.NOISE_REGIONS)}")
    a, b = config.NOISE_REGIONS[split]
    n = len(recording)
    return recording[round(a * n) : round(b * n)]


def silence_clips(recordings: list[np.ndarray], split: str, n: int, clip_samples: int) -> np.ndarray:
    """Silence examples 0..n-1 of `split`: example i draws, from default_rng([SILENCE_SEED, split code, i]),
    a recording (uniform among those whose split region holds one clip), an offset in that region
    (uniform over every whole-clip start) and a volume (uniform(0, 1)), in that order (Warden's);
    the crop times the volume, clipped to [-1, 1].
    recordings: [(L_k,) float32] -> (n, clip_samples) float32."""
    regions = [split_region(r, split) for r in recordings]  # refuses an unknown split
    code = config.SPLITS.index(split)
    usable = [k for k, r in enumerate(regions) if len(r) >= clip_samples]
    out = np.empty((n, clip_samples), dtype=np.float32)
    if n == 0:
        return out
    if not usable:
        longest = max((len(r) for r in recordings), default=0)
        raise ValueError(
            f"no background recording has one clip ({clip_samples} samples) in its {split} region "
            f"{config.NOISE_REGIONS[split]} (the longest has {longest} samples in all): use longer recordings "
            "(--noise-dir)"
        )
    for i in range(n):
        rng = np.random.default_rng([SILENCE_SEED, code, i])
        region = regions[usable[int(rng.integers(len(usable)))]]
        start = int(rng.integers(0, len(region) - clip_samples + 1))
        volume = np.float32(rng.uniform(0.0, 1.0))
        np.clip(region[start : start + clip_samples] * volume, -1.0, 1.0, out=out[i])
    return out


def noise_fingerprint(folder: str | Path) -> dict:
    """What a run records of the noise its silence examples come from: every .wav file's name, size and
    SHA-256, and a SHA-256 over that list (`digest`): the same digest, the same silence examples."""
    folder = Path(folder)
    files = [[p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()] for p in noise_files(folder)]
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    return {"folder": str(folder.resolve()), "files": files, "digest": digest}
