"""Small builders shared by the tests."""

import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechcls import config
from speechcls.decode import load_clip
from speechcls.features import reference_item


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
    return {name: g[name][:] for name in ("features", "valid", "label", "split", "speaker", "path")} | {"attrs": dict(g.attrs)}


def reference(root: Path, rel: str, params) -> np.ndarray:
    """torchaudio applied to the clip decoded on its own: what a stored row must equal."""
    audio, _ = load_clip(root / rel, params.sample_rate, params.clip_samples)
    return reference_item(torch.from_numpy(audio), params).numpy()


def write_wav(path: Path, data: np.ndarray, rate: int, subtype: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return path
