"""Reading audio files. soundfile (libsndfile) here; torchaudio 2.11's `load()` would need torchcodec
and FFmpeg, which these machines do not have."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
                out.unreadable[rel] = str(info).strip() or type(info).__name__
                continue
            out.sample_rates[info.samplerate] += 1
            out.channels[info.channels] += 1
            frames_16k = info.frames * config.SAMPLE_RATE / info.samplerate
            if frames_16k < config.CLIP_SAMPLES:
                out.short += 1
            elif frames_16k > config.CLIP_SAMPLES:
                out.long += 1
    return out
