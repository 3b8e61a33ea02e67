"""Reading audio files. soundfile (libsndfile) here; torchaudio 2.11's `load()` would need torchcodec
and FFmpeg, which these machines do not have."""

from __future__ import annotations

import errno
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechcls import config


@dataclass
class AudioSurvey:
    """What the headers of a set of files say, without decoding the samples."""

    files: int = 0
    sample_rates: Counter = field(default_factory=Counter)  # Hz -> files
    channels: Counter = field(default_factory=Counter)  # channel count -> files
    short: int = 0  # clips under one second once at 16 kHz (they get zero-padded)
    long: int = 0  # clips over one second (they get truncated)
    unreadable: dict[str, str] = field(default_factory=dict)  # relative path -> reason


def _info(path: Path):
    import soundfile as sf

    try:
        return sf.info(str(path))
    except Exception as e:  # libsndfile reports every bad file as a RuntimeError/LibsndfileError
        return e


def survey(root: Path, paths: list[str], workers: int = 8) -> AudioSurvey:
    """Read the header of every file in `paths` (relative to `root`). libsndfile releases the GIL, so
    a thread pool overlaps the many small reads of a 65k-file tree."""
    out = AudioSurvey()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, info in zip(paths, pool.map(_info, (root / p for p in paths))):
            out.files += 1
            if isinstance(info, Exception):
                out.unreadable[rel] = _reason(info, root / rel)
                continue
            out.sample_rates[info.samplerate] += 1
            out.channels[info.channels] += 1
            frames_16k = info.frames * config.SAMPLE_RATE / info.samplerate
            if frames_16k < config.CLIP_SAMPLES:
                out.short += 1
            elif frames_16k > config.CLIP_SAMPLES:
                out.long += 1
    return out


class BadAudio(ValueError):
    """A file that cannot give one clip of audio; featurize skips it and records the reason."""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 mono (downmixed by the channel mean) and its sample rate.

    Raises BadAudio for what cannot be one clip: not audio, a broken header, an empty file, and a file
    truncated inside its data (libsndfile then reads what is there without an error; its header log
    says "data : N (should be M)", which is what we check).
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            if f.frames == 0:
                raise BadAudio("no audio samples")
            for line in f.extra_info.splitlines():
                if line.startswith("data") and "should be" in line:
                    raise BadAudio(f"truncated: header {line.strip()!r}")
            audio = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except BadAudio:
        raise
    except Exception as e:  # LibsndfileError (not audio, bad header, empty file), OSError (unreadable)
        raise BadAudio(_reason(e, path)) from e
    if audio.shape[0] == 0:
        raise BadAudio("no audio samples")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(mono).all():
        raise BadAudio("samples are NaN or infinite")
    return np.ascontiguousarray(mono), rate


def _reason(e: Exception, path: Path) -> str:
    """libsndfile's words without its "Error opening '<path>': " prefix; where it only says "System
    error." (no permission, a missing file, a broken link) or "Format not recognised." (a folder named
    x.wav), the operating system's reason instead."""
    if os.path.isdir(path):
        return "a directory, not an audio file"
    text = str(e).replace(f"Error opening {str(path)!r}: ", "").strip()
    if isinstance(e, OSError) or text.rstrip(".") == "System error":
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            why = (err.strerror or type(err).__name__).lower()
            if os.path.islink(path) and err.errno == errno.ENOENT:
                why = f"a broken symbolic link (to {os.readlink(path)})"
            return f"cannot read the file: {why}"
    return text or type(e).__name__


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """torchaudio's resample (sinc interpolation, its defaults): the one resampler of both backends."""
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(audio), rate, target).numpy()


def fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """Pad with zeros at the end / truncate to exactly n samples, as the chapter's nnf_pad does."""
    if audio.shape[0] >= n:
        return audio[:n]
    return np.pad(audio, (0, n - audio.shape[0]))


def read_at(path: Path, sample_rate: int = config.SAMPLE_RATE) -> tuple[np.ndarray, bool]:
    """The whole file as float32 mono at `sample_rate`. Returns (audio, resampled?). Raises BadAudio."""
    audio, rate = read_audio(path)
    if rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
    return audio, rate != sample_rate


def load_clip(
    path: Path, sample_rate: int = config.SAMPLE_RATE, samples: int = config.CLIP_SAMPLES
) -> tuple[np.ndarray, bool]:
    """One clip ready for features: float32 mono at `sample_rate`, exactly `samples` long.
    Returns (audio, resampled?). Raises BadAudio."""
    audio, resampled = read_at(path, sample_rate)
    return fit_length(audio, samples), resampled


@dataclass
class Batch:
    """One block of decoded clips, in row order."""

    wave: np.ndarray  # (B, L) float32; zeros where the clip was skipped
    decoded: np.ndarray  # (B,) bool: false where the clip was skipped
    skipped: dict[str, str]  # relative path -> reason
    resampled: int
    crc32c: np.ndarray | None = None  # (B,) int64: CRC-32C of each file's bytes, -1 where it could not be read


def decode_batch(
    root: Path, paths: list[str], sample_rate: int, samples: int, pool: ThreadPoolExecutor, group: int = 32
) -> Batch:
    """Decode `paths` with soundfile on a thread pool. libsndfile releases the GIL while it reads, so
    threads overlap cold-disk latency; on a warm page cache decoding is Python-bound, so each task takes
    `group` files (per-file tasks on 4 threads ran 6,300 clips/s here, groups of 32 on 2: 10,000)."""

    def one(rel: str):
        crcs[rel] = file_crc32c(root / rel)
        try:
            return load_clip(root / rel, sample_rate, samples)
        except BadAudio as e:
            return e

    def some(rels: list[str]):
        return [one(rel) for rel in rels]

    wave = np.zeros((len(paths), samples), dtype=np.float32)
    decoded = np.zeros(len(paths), dtype=bool)
    skipped, resampled, crcs = {}, 0, {}
    groups = [paths[i : i + group] for i in range(0, len(paths), group)]
    results = (out for outs in pool.map(some, groups) for out in outs)
    for i, (rel, out) in enumerate(zip(paths, results)):
        if isinstance(out, BadAudio):
            skipped[rel] = str(out)
            continue
        wave[i], decoded[i] = out[0], True
        resampled += out[1]
    return Batch(wave, decoded, skipped, resampled, np.array([crcs[p] for p in paths], dtype=np.int64))


def file_crc32c(path: Path) -> int:
    """CRC-32C of the file's bytes (-1 where it cannot be read): what `speechcls verify --root` compares to
    see that the audio a store was made from is still the same. Read from the page cache the decoder
    has just filled; google_crc32c runs at several GB/s, so it adds little to featurize."""
    import google_crc32c

    try:
        return int(google_crc32c.value(Path(path).read_bytes()))
    except OSError:
        return -1
