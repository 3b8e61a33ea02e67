"""Reading audio files. soundfile (libsndfile) here; torchaudio 2.11's `load()` would need torchcodec
and FFmpeg, which these machines do not have."""

from __future__ import annotations

import errno
import io
import os
import re
import struct
import time
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
    short: int = 0  # clips under the clip length once at 16 kHz (they get zero-padded)
    long: int = 0  # clips over it (they get truncated)
    clip_seconds: float = config.CLIP_SECONDS  # the length counted against
    unreadable: dict[str, str] = field(default_factory=dict)  # relative path -> reason


def _info(path: Path):
    import soundfile as sf

    try:
        return sf.info(str(path))
    except Exception as e:  # libsndfile reports every bad file as a RuntimeError/LibsndfileError
        return e


def survey(root: Path, paths: list[str], workers: int = 8, clip_seconds: float = config.CLIP_SECONDS) -> AudioSurvey:
    """Read the header of every file in `paths` (relative to `root`), counting clips shorter and longer
    than `clip_seconds` (featurize --clip-seconds). libsndfile releases the GIL, so a thread pool
    overlaps the many small reads of a 65k-file tree."""
    out = AudioSurvey(clip_seconds=clip_seconds)
    clip_samples = round(clip_seconds * config.SAMPLE_RATE)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, info in zip(paths, pool.map(_info, (root / p for p in paths))):
            out.files += 1
            if isinstance(info, Exception):
                out.unreadable[rel] = _reason(info, root / rel)
                continue
            out.sample_rates[info.samplerate] += 1
            out.channels[info.channels] += 1
            frames_16k = info.frames * config.SAMPLE_RATE / info.samplerate
            if frames_16k < clip_samples:
                out.short += 1
            elif frames_16k > clip_samples:
                out.long += 1
    return out


class BadAudio(ValueError):
    """A file that cannot give one clip of audio; featurize skips it and records the reason."""


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 mono (downmixed by the channel mean) and its sample rate.

    Raises BadAudio for what cannot be one clip: not audio, a broken header, an empty file, and a file
    truncated inside its data (libsndfile then reads what is there without an error; its header log
    says "data : N (should be M)", which is what we check). A data size of 0xFFFFFFFF is no truncation but
    a streaming header (STREAMING_SIZE): the samples are read to the end of the file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:  # a folder, a broken link, no permission
        raise BadAudio(_reason(e, path)) from e
    return audio_from_bytes(data, path)


def audio_from_bytes(data: bytes, path: Path) -> tuple[np.ndarray, int]:
    """`read_audio` of a file's bytes already in memory (`path` names it in reasons): featurize reads
    each file once, for its CRC and its samples. A plain 16-bit PCM WAV (every Speech Commands clip) is
    read by `pcm16_wav`, which gives libsndfile's samples exactly; anything else goes to libsndfile."""
    wav = pcm16_wav(data)
    if wav is not None:
        return wav
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames == 0:
                raise BadAudio("no audio samples")
            for line in f.extra_info.splitlines():
                declared = _DATA_SIZE_LOG.match(line)
                if declared and "should be" in line and int(declared[1]) != STREAMING_SIZE:
                    raise BadAudio(f"truncated: header {line.strip()!r}")
            audio = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except BadAudio:
        raise
    except Exception as e:  # LibsndfileError (not audio, bad header, empty file)
        raise BadAudio(_reason(e, path)) from e
    if audio.shape[0] == 0:
        raise BadAudio("no audio samples")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.isfinite(mono).all():
        raise BadAudio("samples are NaN or infinite")
    return np.ascontiguousarray(mono), rate


# The size a WAV writer puts in the RIFF and data headers when it cannot seek back to fill them in (ffmpeg and
# sox writing to a pipe): the data then runs to the end of the file, as libsndfile and Python's wave read it
STREAMING_SIZE = 0xFFFFFFFF
_DATA_SIZE_LOG = re.compile(r"^data\s*:\s*(\d+)")  # libsndfile's header log: "data : 4294967295 (should be 64000)"
_FMT = struct.Struct("<HHIIHH")  # WAVE_FORMAT, channels, rate, bytes/s, block align, bits per sample
_PCM16_NORM = np.float32(1 / 32768)  # libsndfile's int16 -> float scale (exact: a power of two)


def pcm16_wav(data: bytes) -> tuple[np.ndarray, int] | None:
    """(float32 mono, rate) of a plain 16-bit PCM WAV, equal sample for sample to what libsndfile gives
    (x / 32768, channels averaged in float32); None for every other file, which libsndfile then reads:
    other encodings, WAVE_FORMAT_EXTENSIBLE, chunks other than fmt / LIST / fact before the data, odd or
    inconsistent sizes, no samples, a data chunk that runs past the end (truncated). A data size of
    STREAMING_SIZE takes the whole frames to the end of the file. Measured here on
    one thread: 15-45 us a one-second clip where libsndfile through soundfile takes 80-115 us."""
    found = pcm16_layout(data)
    if found is None:
        return None
    pcm, channels, rate = found
    return pcm16_float(pcm, channels), rate


def pcm16_float(pcm: np.ndarray, channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """libsndfile's float32 of interleaved int16 samples: x / 32768, channels averaged in float32. `out`
    (mono only): written there, with no array in between (featurize's row of the clip)."""
    if channels == 1:
        return np.multiply(pcm, _PCM16_NORM, dtype=np.float32, out=out)
    if out is not None:
        raise ValueError("pcm16_float writes into `out` for mono samples only")
    frames = np.multiply(pcm, _PCM16_NORM, dtype=np.float32).reshape(-1, channels)
    return np.ascontiguousarray(frames.mean(axis=1, dtype=np.float32))


def pcm16_layout(data: bytes) -> tuple[np.ndarray, int, int] | None:
    """(int16 samples interleaved, a view of `data`; channels; rate) of a plain 16-bit PCM WAV, by the
    rules of `pcm16_wav`; None for every other file."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        kind, size, body = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little"), pos + 8
        if kind == b"data" and size == STREAMING_SIZE and fmt is not None:  # written to a pipe: to the end
            size = (len(data) - body) // (2 * fmt[0]) * (2 * fmt[0])
        if body + size > len(data) or size % 2:
            return None
        if kind == b"fmt ":
            if fmt is not None or size not in (16, 18) or (size == 18 and data[body + 16 : body + 18] != b"\0\0"):
                return None
            tag, channels, rate, byte_rate, align, bits = _FMT.unpack_from(data, body)
            if tag != 1 or bits != 16 or channels < 1 or rate < 1 or align != 2 * channels or byte_rate != rate * align:
                return None
            fmt = (channels, rate)
        elif kind == b"data":
            if fmt is None or size == 0 or size % (2 * fmt[0]):
                return None
            channels, rate = fmt
            return np.frombuffer(data, dtype="<i2", count=size // 2, offset=body), channels, rate
        elif kind not in (b"LIST", b"fact"):
            return None
        pos = body + size
    return None


_OPENING = re.compile(r"^Error opening <_io\.BytesIO object at 0x[0-9a-fA-F]+>: ")  # libsndfile on bytes in memory


def _reason(e: Exception, path: Path) -> str:
    """libsndfile's words without its "Error opening '<path>': " prefix; where it only says "System
    error." (no permission, a missing file, a broken link) or "Format not recognised." (a folder named
    x.wav), the operating system's reason instead."""
    if os.path.isdir(path):
        return "a directory, not an audio file"
    text = _OPENING.sub("", str(e).replace(f"Error opening {str(path)!r}: ", "")).strip()
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
    read_s: float = 0.0  # seconds spent reading the files (and their CRC), summed over threads
    read_bytes: int = 0  # bytes of the files read


def decode_batch(
    root: Path, paths: list[str], sample_rate: int, samples: int, readers: ThreadPoolExecutor, group: int = 32
) -> Batch:
    """Read `paths` on `readers` (anything with an ordered `map`; tasks of `group` files) and decode them
    on the calling thread, each file read once: its bytes give the CRC and the samples.

    Reads on several threads wait on the disk with the GIL released, so a cold disk's or a network file
    system's latencies overlap; files in the page cache are read fastest by one thread beside the
    decoding one (featurize chooses: `readers`). Decoding on one thread: a plain WAV's decode is Python
    between short GIL releases, and two threads decoding hand the GIL back and forth and go slower than
    one (`benchmarks/featurize.py --scaling`: 21,763 clips/s on one thread, 13,129 on two; libsndfile's
    files 8,243 and 4,640). Not a process pool: the samples would be pickled back (64 KB a clip), and
    processes decoded at 27-76 % of one thread's rate at 1 and 2 workers."""
    n = len(paths)
    wave = np.zeros((n, samples), dtype=np.float32)
    decoded = np.zeros(n, dtype=bool)
    crcs = np.full(n, -1, dtype=np.int64)
    batch = Batch(wave, decoded, {}, 0, crcs)
    base = os.fspath(root)
    groups = [paths[start : start + group] for start in range(0, n, group)]
    read = (file for files in readers.map(lambda rels: _read_files(base, rels), groups) for file in files)
    for i, (data, crc, read_s) in enumerate(read):  # in order, as each group's reads are done
        batch.read_s += read_s
        path = os.path.join(base, paths[i])  # a string: a Path a file costs ~5 us
        if isinstance(data, OSError):  # a folder, a broken link, no permission: skipped like a bad file
            batch.skipped[paths[i]] = _reason(data, path)
            continue
        crcs[i], batch.read_bytes = crc, batch.read_bytes + len(data)
        plain = pcm16_layout(data)
        if plain is not None and plain[1] == 1 and plain[2] == sample_rate:  # every Speech Commands clip
            m = min(samples, plain[0].shape[0])  # straight into the row: pcm16_wav's numbers
            pcm16_float(plain[0][:m], 1, out=wave[i, :m])
            decoded[i] = True
            continue
        try:
            audio, rate = audio_from_bytes(data, path)
            if rate != sample_rate:
                audio, batch.resampled = resample(audio, rate, sample_rate), batch.resampled + 1
        except BadAudio as e:
            batch.skipped[paths[i]] = str(e)
            continue
        m = min(samples, audio.shape[0])
        wave[i, :m] = audio[:m]  # fit_length in place: zero-padded / truncated
        decoded[i] = True
    batch.skipped = {p: batch.skipped[p] for p in paths if p in batch.skipped}  # in row order
    return batch


def _read_files(base: str, rels: list[str]) -> list[tuple[bytes | OSError, int, float]]:
    """(bytes or the OSError reading raised, CRC-32C of the bytes, seconds) of each file, in order."""
    import google_crc32c

    out = []
    for rel in rels:
        t = time.perf_counter()
        try:
            with open(os.path.join(base, rel), "rb", buffering=0) as f:  # unbuffered: one read of the whole file
                data = f.read()
            out.append((data, google_crc32c.value(data), time.perf_counter() - t))
        except OSError as e:
            out.append((e, -1, time.perf_counter() - t))
    return out


def file_crc32c(path: Path) -> int:
    """CRC-32C of the file's bytes (-1 where it cannot be read): what `speechcls verify --root` compares to
    see that the audio a store was made from is still the same (featurize takes it from the bytes it
    decodes, in `decode_batch`)."""
    import google_crc32c

    try:
        return int(google_crc32c.value(Path(path).read_bytes()))
    except OSError:
        return -1
