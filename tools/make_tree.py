"""A large synthetic tree in the official layout without espeak-ng: for throughput benchmarks and for
bare GPU machines (no apt there). Not speech: each word is a fixed pattern of three gliding tones
(its "formants"), each speaker a pitch factor; offset, length, loudness and a noise floor vary per
clip. Classes are learnable, so training benchmarks do real work. Deterministic for a seed.

    python tools/make_tree.py --out /tmp/tree --clips 64727 [--words 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from speechcls import config
from speechcls.data.signals import colored_noise, to_pcm16
from speechcls.data.synth import write_lists

SR = config.SAMPLE_RATE


def word_pattern(w: int) -> np.ndarray:
    """(3, 2) start and end frequencies (Hz) of the three tones of word w."""
    rng = np.random.default_rng([7, w])
    return np.sort(rng.uniform([250, 900, 2000], [900, 2200, 3800], size=(2, 3)), axis=1).T


def clip(w: int, pitch: float, rng: np.random.Generator, noise: np.ndarray) -> np.ndarray:
    n = int(rng.uniform(0.35, 0.85) * SR)
    t = np.arange(n) / SR
    env = np.sin(np.pi * np.arange(n) / n) ** 2
    x = np.zeros(n)
    for k, (f0, f1) in enumerate(word_pattern(w) * pitch):
        freq = f0 + (f1 - f0) * t / t[-1]
        x += (0.6**k) * np.sin(2 * np.pi * np.cumsum(freq) / SR + rng.uniform(0, 2 * np.pi))
    x *= env * rng.uniform(0.2, 0.8) / np.abs(x).max()
    out = np.zeros(config.CLIP_SAMPLES, dtype=np.float32)
    start = int(rng.integers(0, config.CLIP_SAMPLES - n + 1))
    out[start : start + n] = x
    s = int(rng.integers(0, noise.size - config.CLIP_SAMPLES))
    return out + 0.01 * noise[s : s + config.CLIP_SAMPLES] / 0.5


def make_tree(out: Path, clips: int, words: int = 30, seed: int = 0) -> Path:
    names = list(config.V001_WORDS[:words]) if words <= 30 else [f"word{i:02d}" for i in range(words)]
    speakers_n = max(3, -(-clips // words))  # the last speaker may say only some words
    speakers = [hashlib.sha1(f"{seed}/{s}".encode()).hexdigest()[:8] for s in range(speakers_n)]
    pitches = np.random.default_rng([seed, 1]).uniform(0.8, 1.25, speakers_n)
    if out.exists():
        shutil.rmtree(out)
    for name in names:
        (out / name).mkdir(parents=True)
    noise = colored_noise(10 * SR, 1.0, np.random.default_rng([seed, 2]))
    (out / config.BACKGROUND_DIR).mkdir()
    sf.write(out / config.BACKGROUND_DIR / "pink_noise.wav", to_pcm16(noise), SR, subtype="PCM_16")

    def one(i: int) -> None:
        s, w = divmod(i, words)
        rng = np.random.default_rng([seed, 3, i])
        sf.write(
            out / names[w] / f"{speakers[s]}_nohash_0.wav",
            to_pcm16(clip(w, pitches[s], rng, noise)),
            SR,
            subtype="PCM_16",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(clips)))
    used = sorted({speakers[i // words] for i in range(clips)})
    write_lists(out, used, tuple(names), seed)
    # write_lists names every (word, speaker) pair; the last speaker may lack some words
    for name in (config.VALIDATION_LIST, config.TESTING_LIST):
        lines = [ln for ln in (out / name).read_text().splitlines() if (out / ln).is_file()]
        (out / name).write_text("".join(ln + "\n" for ln in lines))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clips", type=int, default=config.RELEASES["v0.01"].n_clips)
    ap.add_argument("--words", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    make_tree(args.out, args.clips, args.words, args.seed)
    print(f"{args.out}: {args.clips} clips, {args.words} words")


if __name__ == "__main__":
    main()
