"""Offline demo data: a Speech Commands tree spoken by the espeak-ng synthesizer, of words or your own
phrases ("hey computer": a class folder named as written).

Each voice (English accent x voice variant x rate x pitch) is one "speaker" and says every word once.
Clips are resampled to 16 kHz with torchaudio (the same resampler featurize uses), trimmed of the
synthesizer's silence, scaled to a random peak, placed at a random offset inside the clip (one second,
or --clip-seconds) and written as mono PCM16 of exactly that many samples. Speakers, not clips, are
split into train / validation / test, so the lists are speaker-disjoint like the release's. Everything
random comes from generators seeded by (seed, voice, word), so a seed gives the same bytes whatever the
thread order.

Variety for a wake word (off by default, so the demo tree stays byte for byte what it was): `reverb`, the
chance that a clip is played in a simple room (a synthetic impulse response: the direct sound, then
exponentially decaying noise with RT60 uniform in signals.ROOM_RT60 seconds, mixed at a wet share uniform in
signals.ROOM_WET), and `snr`, background noise (the tree's white / pink / brown recordings) mixed at a
signal-to-noise ratio uniform in [low, high] dB against the speech's own power. Both in numpy (an FFT
convolution, a power ratio): a few lines each, no sox binary to install, and drawn from their own
generator, default_rng([seed, 4, voice, word]), so turning them on leaves every other draw alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.data.signals import colored_noise, reverberate, room, to_pcm16
from speechcls.runtime import Progress, zarr_root

ESPEAK = "espeak-ng"
MARKER = ".speechcls-synth.json"  # written last; holds the parameters, so a rerun can tell "done"

# English accents of espeak-ng 1.51 (`espeak-ng --voices=en`).
ACCENTS = (
    "en-us", "en-us-nyc", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
)  # fmt: skip
# Human-sounding voice variants (`espeak-ng --voices=variant`); robots, whispers and croaks left out.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy", "Annie",
    "adam", "david", "ed", "john", "linda", "max", "paul", "rob", "robert", "steph", "klatt", "klatt2", "klatt3",
)  # fmt: skip
RATES = (120, 140, 160, 180)  # words per minute; at 120 the longest word still fits in one second
PITCHES = (30, 40, 50, 60, 70)  # espeak-ng's 0-99 pitch scale
NOISE_FILES = {"white_noise.wav": 0.0, "pink_noise.wav": 1.0, "brown_noise.wav": 2.0}  # name -> spectral slope
NOISE_SECONDS = 30
MAX_CLIP_SECONDS = 10.0  # a clip is cropped from the NOISE_SECONDS recordings; a phrase fits in far less


@dataclass(frozen=True)
class Voice:
    accent: str
    variant: str
    rate: int
    pitch: int

    @property
    def speaker(self) -> str:
        """8 hex digits like the release's speaker ids, stable for the voice's parameters."""
        key = f"{self.accent}+{self.variant}/{self.rate}/{self.pitch}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class SynthParams:
    words: tuple[str, ...]
    voices: int
    seed: int
    noise: float
    clip_samples: int = config.CLIP_SAMPLES
    reverb: float = 0.0  # the chance of a room (0 = never)
    snr: tuple[float, float] | None = None  # noise at a random SNR in [low, high] dB (None = --noise's rule)

    def record(self) -> dict:
        """What the marker keeps: the demo's fields, and the others only where they are not the default, so a
        tree written before they existed is still "present" for the same command."""
        d = asdict(self)
        for name in ("clip_samples", "reverb", "snr"):
            if d[name] == SynthParams.__dataclass_fields__[name].default:
                d.pop(name)
        if "snr" in d:
            d["snr"] = list(d["snr"])
        return d


def espeak_version() -> str:
    """The synthesizer's version line; ValueError with install instructions when it is missing."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise ValueError(
            "espeak-ng is not installed; `speechcls synth` speaks the words with it. Install it with "
            "`sudo apt-get install espeak-ng` (Debian/Ubuntu), `sudo dnf install espeak-ng` (Fedora) or "
            "`brew install espeak-ng` (macOS), then run again."
        )
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


def is_word(word: str) -> bool:
    """A word synth speaks and names a folder after: letters and digits, '-' only between them; a phrase is
    such words with one space between them ("hey computer"). Never an espeak-ng option (`-x`,
    `--path=...`, `-w FILE`) nor a hidden or special folder name (`_x`, `.`)."""
    return all(part.isalnum() for w in word.split(" ") for part in w.split("-"))


def parse_snr(text: str) -> tuple[float, float]:
    """--snr "LOW,HIGH" in dB (one number: both ends); ValueError naming the value otherwise."""
    import math

    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(math.isfinite(p) for p in parts) or parts[0] > parts[1]:
        raise ValueError(f"--snr {text!r}: give LOW,HIGH in dB with LOW <= HIGH (e.g. --snr 5,20), or one number")
    return parts[0], parts[1]


def choose_voices(n: int, seed: int) -> list[Voice]:
    """n distinct voices drawn without replacement from the accent x variant x rate x pitch grid."""
    grid = [Voice(*v) for v in itertools.product(ACCENTS, VARIANTS, RATES, PITCHES)]
    if not 3 <= n <= len(grid):
        raise ValueError(f"--voices {n}: need 3 to {len(grid)} (one speaker at least per split)")
    pick = np.random.default_rng([seed, 0]).choice(len(grid), size=n, replace=False)
    voices = [grid[i] for i in pick]
    if len({v.speaker for v in voices}) != n:  # 8 hex digits over a few thousand voices: never seen
        raise RuntimeError("two synthetic voices hash to the same speaker id; choose another --seed")
    return voices


def _speak(voice: Voice, word: str, tmp: Path) -> tuple[np.ndarray, int]:
    out = tmp / f"{voice.speaker}_{word}.wav"
    cmd = [
        ESPEAK,
        "-v",
        f"{voice.accent}+{voice.variant}",
        "-s",
        str(voice.rate),
        "-p",
        str(voice.pitch),
        "-w",
        str(out),
        "--",  # the end of the options: the word is text to speak, whatever it starts with
        word,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    import soundfile as sf

    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    out.unlink()
    return audio.mean(axis=1), rate


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == config.SAMPLE_RATE:
        return audio
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(audio), rate, config.SAMPLE_RATE).numpy()


def _trim(audio: np.ndarray, rel_threshold: float = 0.01, margin: int = 320) -> np.ndarray:
    """Drop the synthesizer's leading and trailing silence, keeping a 20 ms margin."""
    loud = np.flatnonzero(np.abs(audio) > rel_threshold * np.abs(audio).max())
    if loud.size == 0:
        return audio
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin + 1]


def make_clip(
    voice: Voice, v_idx: int, w_idx: int, word: str, params: SynthParams, noises: list[np.ndarray], tmp: Path
) -> tuple[np.ndarray, bool]:
    """One clip of exactly params.clip_samples int16 samples, and whether the speech was longer (cut)."""
    n = params.clip_samples
    rng = np.random.default_rng([params.seed, 1, v_idx, w_idx])
    audio, rate = _speak(voice, word, tmp)
    trimmed = _trim(_resample(audio, rate))
    speech = trimmed[:n]
    peak = rng.uniform(0.25, 0.9)
    speech = speech * (peak / max(float(np.abs(speech).max()), 1e-6))
    clip = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - speech.size + 1))
    clip[offset : offset + speech.size] = speech
    if params.noise > 0:
        bg = noises[int(rng.integers(len(noises)))]
        start = int(rng.integers(0, bg.size - n))
        clip += params.noise * peak * rng.uniform(0.5, 1.0) * bg[start : start + n] / 0.5
    variety = np.random.default_rng([params.seed, 4, v_idx, w_idx])  # its own draws: the ones above stay
    if params.reverb > 0 and variety.random() < params.reverb:
        clip = reverberate(clip, room(n, config.SAMPLE_RATE, variety))
    if params.snr is not None:
        snr_db = variety.uniform(*params.snr)
        bg = noises[int(variety.integers(len(noises)))]
        start = int(variety.integers(0, bg.size - n))
        crop = bg[start : start + n]
        power = float(np.mean(speech**2))  # of the speech alone: the clip's silence does not count
        clip = clip + crop * np.sqrt(power / (float(np.mean(crop**2)) * 10 ** (snr_db / 10)))
        top = float(np.abs(clip).max())
        if top > 0.99:  # scaled, not clipped: a clipped mix is a distortion the model would learn
            clip *= 0.99 / top
    return to_pcm16(clip), trimmed.size > n


def write_lists(tree: Path, speakers: list[str], words: tuple[str, ...], seed: int) -> None:
    """Speaker-disjoint validation_list.txt / testing_list.txt: SYNTH_HELDOUT_PERCENT of the speakers
    each (at least one), drawn by a seeded permutation; every clip `<word>/<speaker>_nohash_0.wav`."""
    speakers = sorted(speakers)
    order = np.random.default_rng([seed, 3]).permutation(len(speakers))
    n_held = max(1, len(speakers) * config.SYNTH_HELDOUT_PERCENT // 100)
    held = {
        config.VALIDATION_LIST: {speakers[i] for i in order[:n_held]},
        config.TESTING_LIST: {speakers[i] for i in order[n_held : 2 * n_held]},
    }
    for name, group in held.items():
        lines = sorted(f"{w}/{s}_nohash_0.wav" for w in words for s in group)
        (tree / name).write_text("".join(line + "\n" for line in lines))


def write_noise(folder: Path, seed: int) -> list[np.ndarray]:
    """The tree's _background_noise_ recordings (white, pink, brown); returns them for mixing into clips."""
    import soundfile as sf

    folder.mkdir(parents=True)
    rng = np.random.default_rng([seed, 2])
    noises = []
    for name, slope in NOISE_FILES.items():
        noises.append(colored_noise(NOISE_SECONDS * config.SAMPLE_RATE, slope, rng))
        sf.write(folder / name, to_pcm16(noises[-1]), config.SAMPLE_RATE, subtype="PCM_16")
    return noises


def _synth_record(out: Path) -> dict | None:
    """The parameters recorded in the marker of a tree synth wrote at `out`, else None."""
    try:
        record = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):  # no marker (not synth's tree), or not one synth wrote
        return None
    return record if isinstance(record, dict) and "espeak" in record else None


def _refuse_occupied(out: Path, written: dict | None, overwrite: bool) -> None:
    """ValueError unless `out` may receive the tree: absent, empty, or synth's own tree and `overwrite`."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return
    if written is None:
        raise ValueError(
            f"{out} is not empty and is not a tree written by `speechcls synth` (no {MARKER}): --overwrite only "
            "replaces synth's own trees; choose another --out"
        )
    if not overwrite:
        raise ValueError(
            f"{out} already holds a synth tree with other parameters; pass --overwrite to replace it or choose "
            "another --out"
        )


def synthesize(
    out: str | Path | None = None,
    words: tuple[str, ...] = config.V001_WORDS,
    voices: int = config.SYNTH_VOICES,
    seed: int = 0,
    noise: float = config.SYNTH_NOISE,
    overwrite: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    clip_seconds: float = config.CLIP_SECONDS,
    reverb: float = 0.0,
    snr: tuple[float, float] | None = None,
) -> tuple[Path, str]:
    """Write the tree to `out` (default data/synth_commands). Returns (out, "present" | "written").
    `words` may be phrases ("hey computer"); `clip_seconds`, `reverb` and `snr`: see the module's docstring
    (`snr` replaces `noise`'s rule; give one of them). Speech longer than the clip is cut, with a warning.

    A tree already written with the same parameters is left as it is; one synth wrote with other
    parameters is replaced only with `overwrite`; any other non-empty `out` is refused, `overwrite` or
    not (only a tree holding synth's marker file is ever deleted). The tree is built in a temporary
    sibling folder and renamed into place, so an interrupted run never leaves a tree that looks finished.
    """
    out = Path(out) if out is not None else config.data_dir() / config.SYNTH_DIRNAME
    words = tuple(dict.fromkeys(" ".join(w.split()).lower() for w in words if w.strip()))
    for w in words:
        if not is_word(w):
            raise ValueError(
                f"word {w!r} is neither text to speak nor a class folder name: a word is letters and digits, with '-' "
                "only between them (e.g. 'yes', 'follow-up'), a phrase such words with spaces between them ('hey "
                "computer'), never an option like '-x'"
            )
    if not words:
        raise ValueError("--words is empty: give at least one word")
    if (store := zarr_root(out)) is not None:
        raise ValueError(
            f"--out {out} is inside the Zarr store {store}: synth never writes into one; choose another --out"
        )
    if not noise >= 0:
        raise ValueError(f"--noise {noise}: must be >= 0")
    if not (isinstance(clip_seconds, (int, float)) and 0.1 <= clip_seconds <= MAX_CLIP_SECONDS):
        raise ValueError(f"--clip-seconds {clip_seconds!r}: synth writes clips of 0.1 to {MAX_CLIP_SECONDS:g} s")
    if not (isinstance(reverb, (int, float)) and 0 <= reverb <= 1):
        raise ValueError(f"--reverb {reverb!r} is the chance of a room: give a number in [0, 1]")
    if snr is not None and noise > 0:
        raise ValueError(
            f"--noise {noise:g} and --snr {snr[0]:g},{snr[1]:g} are two rules for the same noise: choose one"
        )
    params = SynthParams(
        words, voices, seed, float(noise), config.clip_samples(clip_seconds), float(reverb),
        None if snr is None else (float(snr[0]), float(snr[1])),
    )  # fmt: skip
    version = espeak_version()
    chosen = choose_voices(voices, seed)
    record = {**params.record(), "words": list(words), "espeak": version}

    written = _synth_record(out)
    if written == record and not overwrite:
        return out, "present"
    _refuse_occupied(out, written, overwrite)

    tmp_tree = out.with_name(f".{out.name}.synth-tmp")
    shutil.rmtree(tmp_tree, ignore_errors=True)
    try:
        _build(tmp_tree, params, chosen, record, version, workers, progress)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_tree.rename(out)
    finally:  # a failed or interrupted run leaves no half tree behind (a finished one was renamed away)
        shutil.rmtree(tmp_tree, ignore_errors=True)
    return out, "written"


def _build(
    tmp_tree: Path, params: SynthParams, chosen: list[Voice], record: dict, version: str, workers, progress
) -> None:
    """The whole tree in `tmp_tree`: noise, clips, lists, README and the marker last."""
    import soundfile as sf

    words, seed = params.words, params.seed
    noises = write_noise(tmp_tree / config.BACKGROUND_DIR, seed)
    for w in words:
        (tmp_tree / w).mkdir()

    def job(task: tuple[int, int]) -> bool:
        v_idx, w_idx = task
        voice, word = chosen[v_idx], words[w_idx]
        clip, cut = make_clip(voice, v_idx, w_idx, word, params, noises, scratch)
        sf.write(tmp_tree / word / f"{voice.speaker}_nohash_0.wav", clip, config.SAMPLE_RATE, subtype="PCM_16")
        progress.advance()
        return cut

    tasks = [(v, w) for v in range(len(chosen)) for w in range(len(words))]
    progress = progress or Progress()
    progress.start("synth", len(tasks))
    with tempfile.TemporaryDirectory(prefix="speechcls-synth-") as scratch_dir:
        scratch = Path(scratch_dir)
        # espeak-ng runs as a subprocess and libsndfile releases the GIL: threads keep both cores busy
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            cut = sum(pool.map(job, tasks))
    progress.end()
    if cut:
        import warnings

        warnings.warn(
            f"{cut} of {len(tasks)} clips were longer than {params.clip_samples / config.SAMPLE_RATE:g} s and were cut "
            "(the slowest voices say a phrase slowly): pass a longer --clip-seconds",
            stacklevel=3,
        )

    write_lists(tmp_tree, [v.speaker for v in chosen], words, seed)
    (tmp_tree / "README.md").write_text(
        "Synthetic Speech Commands-style tree written by `speechcls synth` with espeak-ng "
        f"({version}).\nNot human speech: for demos and tests of the pipeline only.\n"
    )
    (tmp_tree / MARKER).write_text(json.dumps(record, indent=1) + "\n")
