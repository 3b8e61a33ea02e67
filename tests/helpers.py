"""Small builders shared by the tests."""

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from speechcls import config
from speechcls.runtime import Progress

# The small store most training tests share (conftest's small_store): 10 words of the real clips (74
# train, 12 validation, 14 test rows), mel with 80 filters and hop 200: 80 x 81, just above the seed
# CNN's 78 x 78 minimum.
WORDS10 = ("bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy")
SMALL_MEL = dict(n_mels=80, hop_length=200)


def torchrun(*args: str, env: dict | None = None, check: bool = True, ranks: int = 2):
    """`torchrun --standalone --nproc-per-node <ranks> -m speechcls <args>`, one thread per rank."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [*cmd, "-m", "speechcls", *args], capture_output=True, text=True, timeout=300, check=check, env=env
    )


def copy_tree(src: Path, dst: Path, per_word: int | None = None, words=None) -> Path:
    """Copy (part of) an official-layout tree, with its lists."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (config.VALIDATION_LIST, config.TESTING_LIST):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    for d in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if words is not None and d.name not in words:
            continue
        (dst / d.name).mkdir(exist_ok=True)
        for wav in sorted(d.glob("*.wav"))[:per_word]:
            shutil.copy(wav, dst / d.name / wav.name)
    return dst


def fsdd_tree(fsdd: Path, dst: Path, per_digit: int = 6) -> Path:
    """FSDD (8 kHz, {digit}_{speaker}_{index}.wav) arranged in the official layout; george is the test speaker."""
    names = "zero one two three four five six seven eight nine".split()
    test = []
    for wav in sorted(fsdd.glob("*.wav")):
        digit, speaker, idx = wav.stem.split("_")
        if int(idx) >= per_digit:
            continue
        rel = f"{names[int(digit)]}/{speaker}_nohash_{idx}.wav"
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, dst / rel)
        if speaker == "george":
            test.append(rel)
    (dst / config.VALIDATION_LIST).write_text("")
    (dst / config.TESTING_LIST).write_text("\n".join(sorted(test)) + "\n")
    return dst


def read_store(path: Path) -> dict:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    return {name: g[name][:] for name in ("features", "valid", "label", "split", "speaker", "path")} | {
        "attrs": dict(g.attrs)
    }


def reference(root: Path, rel: str, params) -> np.ndarray:
    """What a stored row must equal, written out with soundfile and torchaudio's own transforms (never
    the code under test): the chapter's per-item pipeline on the clip decoded on its own."""
    audio, rate = sf.read(root / rel, dtype="float32", always_2d=True)
    wave = torch.from_numpy(audio.mean(axis=1, dtype=np.float32))
    if rate != params.sample_rate:
        wave = torchaudio.functional.resample(wave, rate, params.sample_rate)
    wave = torch.nn.functional.pad(wave[: params.clip_samples], (0, max(0, params.clip_samples - len(wave))))
    if params.variant == "waveform":
        return (wave * 32768.0).round().clamp(-32768, 32767).to(torch.int16)[None].numpy()  # (1, L)
    stft = dict(
        n_fft=params.n_fft, win_length=params.win_length, hop_length=params.hop_length, normalized=params.normalized
    )
    if params.variant == "mel":
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate,
            f_min=params.f_min,
            f_max=params.f_max,
            n_mels=params.n_mels,
            power=2.0,
            **stft,
        )
        return mel(wave)[None].numpy()  # (1, n_mels, T)
    if params.variant == "spectrogram":
        return torchaudio.transforms.Spectrogram(power=2.0, **stft)(wave)[None].numpy()  # (1, F, T)
    x = torchaudio.transforms.Spectrogram(power=None, **stft)(wave)  # (F, T) complex
    return torch.stack([x.real, x.imag]).numpy()  # (2, F, T)


def write_wav(path: Path, data: np.ndarray, rate: int, subtype: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return path


class InterruptAfter(Progress):
    """A progress display that interrupts the run after its n-th finished task (an epoch of fit) or its
    n-th advance (a block of featurize), as Ctrl-C would: the tests' way to stop a run mid-way."""

    def __init__(self, ends: int | None = None, advances: int | None = None):
        self.ends, self.advances = ends, advances

    def advance(self, n: int = 1, **stats) -> None:
        if self.advances is not None:
            self.advances -= 1
            if self.advances == 0:
                raise KeyboardInterrupt("interrupted (test)")

    def end(self, **summary) -> None:
        if self.ends is not None:
            self.ends -= 1
            if self.ends == 0:
                raise KeyboardInterrupt("interrupted (test)")


def as_format_4(store: Path) -> Path:
    """Turn a store into what format 4 wrote for the same run: no chunk_crc32c array, no array_digests or
    records_crc32c, format_version 4 (in the request too) and the digests of the protected attributes only."""
    import json
    import shutil

    from speechcls.store.format import PROTECTED_ATTRS, digest

    shutil.rmtree(store / "chunk_crc32c")
    meta = store / "zarr.json"
    doc = json.loads(meta.read_text())
    attrs = doc["attributes"]
    for key in ("array_digests", "records_crc32c"):
        attrs.pop(key)
    attrs["format_version"] = 4
    attrs["request"]["format_version"] = 4
    attrs["attr_digests"] = {k: digest(attrs[k]) for k in PROTECTED_ATTRS if k in attrs}
    meta.write_text(json.dumps(doc))
    return store
