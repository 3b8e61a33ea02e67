"""Every default of speechcls in one commented place. No torch import here: the CLI reads this module
before any command runs, and `speechcls --help` must stay instant."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

# --- audio -------------------------------------------------------------------------------------------
SAMPLE_RATE = 16_000  # Speech Commands is recorded (or converted by its authors) at 16 kHz
CLIP_SAMPLES = 16_000  # every clip is padded with zeros / truncated to exactly one second
CLIP_SECONDS = 1.0  # featurize's --clip-seconds: CLIP_SAMPLES at SAMPLE_RATE; the store keeps its own
MAX_CLIP_SECONDS = 600.0  # a longer "clip" is a recording to cut (and one example would take 38 MB of float32)


def clip_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """--clip-seconds as samples at `sample_rate` (rounded to the nearest); ValueError naming the value
    outside (0, MAX_CLIP_SECONDS]."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= MAX_CLIP_SECONDS):
        raise ValueError(f"--clip-seconds must be a finite number in (0, {MAX_CLIP_SECONDS:g}], got {seconds!r}")
    return round(seconds * sample_rate)


# --- splits ------------------------------------------------------------------------------------------
SPLITS = ("train", "validation", "test")  # index = the int8 code stored for a clip's split
RANDOM_SPLIT_PERCENT = (60, 20, 20)  # the chapter's random split; floor rounding, rest to the last part
SPLIT_SEED = 0  # seed of the random split's permutation, where none is given

# --- layout of a Speech Commands tree ---------------------------------------------------------------
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
BACKGROUND_DIR = "_background_noise_"  # long noise recordings; not a class


@dataclass(frozen=True)
class DatasetRelease:
    """One published release of Speech Commands."""

    version: str  # "v0.01" | "v0.02"
    url: str
    sha256: str  # of the .tar.gz, as published; a mismatch extracts nothing
    n_words: int  # word folders in the release (the number of classes)
    n_clips: int

    @property
    def name(self) -> str:
        """Folder name of the extracted tree, which is also the dataset's name in the cache."""
        return f"speech_commands_{self.version}"


RELEASES = {
    "v0.01": DatasetRelease(
        "v0.01",
        "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
        "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
        n_words=30,
        n_clips=64_727,
    ),
    "v0.02": DatasetRelease(
        "v0.02",
        "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
        n_words=35,
        n_clips=105_829,
    ),
}
DEFAULT_VERSION = "v0.01"  # the chapter's release

# The 30 words of v0.01, in the sorted order that makes them class indices.
V001_WORDS = (
    "bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy",
    "house", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "wow", "yes", "zero",
)  # fmt: skip

# --- features ----------------------------------------------------------------------------------------
VARIANTS = ("spectrogram", "mel", "complex", "waveform")
CHANNELS = {"spectrogram": 1, "mel": 1, "complex": 2, "waveform": 1}  # complex: (real, imaginary)
DTYPES = ("float32", "float16")  # of stored features; `waveform` is always stored as int16


@dataclass(frozen=True)
class FeatureParams:
    """What a stored feature is: the chapter's settings as defaults. Power is fixed by the variant
    (spectrogram and mel: 2, complex: none), as in the chapter."""

    variant: str = "spectrogram"
    n_fft: int = 512
    win_length: int = 480  # 0.03 s at 16 kHz
    hop_length: int = 160  # 0.01 s: 1 + 16000 // 160 = 101 frames (torch.stft centres its frames)
    n_mels: int = 128  # mel only; HTK scale, no filter normalization (torchaudio's defaults)
    f_min: float = 0.0
    f_max: float | None = None  # None = sample_rate / 2
    normalized: bool = True  # divide by the window's L2 norm, as the chapter's transform_spectrogram
    sample_rate: int = SAMPLE_RATE
    clip_samples: int = CLIP_SAMPLES
    dtype: str = "float32"

    def validate(self) -> "FeatureParams":
        """Refuse impossible settings before any work, naming the values."""
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}: choose one of {', '.join(VARIANTS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.n_fft < 2:
            raise ValueError(f"n_fft must be at least 2, got {self.n_fft}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"require 0 < win_length <= n_fft, got win_length={self.win_length}, n_fft={self.n_fft}")
        if self.hop_length <= 0:
            raise ValueError(f"hop_length must be positive, got {self.hop_length}")
        if self.sample_rate <= 0 or self.clip_samples <= 0:
            raise ValueError(
                f"sample_rate and clip_samples must be positive, got {self.sample_rate}, {self.clip_samples}"
            )
        if self.clip_samples <= self.n_fft // 2:
            raise ValueError(f"clip_samples={self.clip_samples} is too short for n_fft={self.n_fft} (reflect padding)")
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= self.sample_rate / 2:
            raise ValueError(f"require 0 <= f_min < f_max <= sample_rate / 2, got f_min={self.f_min}, f_max={f_max}")
        if self.variant == "mel" and not 0 < self.n_mels <= self.n_fft // 2 + 1:
            raise ValueError(f"require 0 < n_mels <= n_fft // 2 + 1 = {self.n_fft // 2 + 1}, got n_mels={self.n_mels}")
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        """(C, F, T) of one stored item; (1, L) for waveform."""
        if self.variant == "waveform":
            return (1, self.clip_samples)
        freq = self.n_mels if self.variant == "mel" else self.n_fft // 2 + 1
        return (CHANNELS[self.variant], freq, 1 + self.clip_samples // self.hop_length)

    @property
    def store_dtype(self) -> str:
        return "int16" if self.variant == "waveform" else self.dtype

    def describing(self) -> dict:
        """Only the fields that define the stored numbers (the mel ones only for mel)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        if self.variant != "mel":
            d.pop("n_mels")
        if self.variant == "waveform":  # the clip itself: no STFT settings, always int16
            d = {k: d[k] for k in ("variant", "sample_rate", "clip_samples")} | {"dtype": "int16"}
        return d

    def key(self) -> str:
        """Short hash of variant, feature parameters and dtype: names the default store."""
        import hashlib
        import json

        return hashlib.sha1(json.dumps(self.describing(), sort_keys=True).encode()).hexdigest()[:8]


# --- tasks (speechcls/data/tasks.py) ------------------------------------------------------------------
TASKS = ("words", "kws12", "keywords")  # keywords: --keywords' labels, the kws12 rule (speechcls/data/tasks.py)
KWS12_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # Warden 2018's ten
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
# Warden's input_data.py: silence and unknown each 10 % of the known-word examples of a split, so each is
# one twelfth of the split (10 / 120); the unknown examples are a seeded choice among the other words
SILENCE_PERCENT = 10.0
UNKNOWN_PERCENT = 10.0
# background-noise recordings cut in time between the splits, so no noise is shared between them:
# train [0, 0.8), validation [0.8, 0.9), test [0.9, 1.0) of every recording
NOISE_REGIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}

# --- the feature store (its format: speechcls/store/format.py) -----------------------------------------
ROW_ORDER_SEED = 0  # rows are written in a seeded shuffled order, so every chunk mixes classes
BATCH_SIZE = 256  # clips per batched feature call (rounded up to whole chunks)


# --- training (the chapter's recipe as the defaults) -------------------------------------------------
def check_range(option: str, value, low: str, high: str, whole: bool = False) -> None:
    """ValueError naming `option` unless `value` is a finite number (a whole one where `whole`) in the
    range from `low` to `high`, each written as its bracket and bound: "[0" (0 included), "(0" (excluded),
    "inf)" (no upper bound), "1)" (1 excluded), "1]" (included)."""
    lo, hi = float(low[1:]), float(high[:-1])
    if whole:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if low[0] == "(" else value >= lo) and (value < hi if high[-1] == ")" else value <= hi)
    if not ok:
        kind = "a whole number" if whole else "a finite number"
        raise ValueError(f"{option} must be {kind} in {low}, {high}, got {value!r}")


# Every number of a TrainConfig: (field, lower bound, upper bound, whole), as check_range reads them. The
# CLI option is the field's name with dashes; a NaN, an infinity or a bound crossed is refused there, so
# nothing (torch's optimizer, numpy's seeding) meets a value it cannot take and says so without the name.
_RANGES = (
    ("epochs", "[1", "inf)", True), ("batch_size", "[1", "inf)", True), ("workers", "[1", "inf)", True),
    ("split_seed", "[0", "inf)", True), ("seed", "[0", f"{2**32 - 1}]", True),  # numpy's global seed: 32 bits
    ("patience", "[1", "inf)", True), ("min_epochs", "[0", "inf)", True), ("n_mels", "[0", "inf)", True),
    ("max_lr", "(0", "inf)", False), ("warmup_epochs", "[0", "inf)", False), ("weight_decay", "[0", "inf)", False),
    ("label_smoothing", "[0", "1)", False), ("ema", "[0", "1)", False), ("dropout", "[0", "1)", False),
    ("dropout2d", "[0", "1)", False), ("speed", "[0", "0.5)", False), ("shift_ms", "[0", "inf)", False),
    ("noise_prob", "[0", "1]", False), ("noise_volume", "[0", "inf)", False), ("mixup", "[0", "inf)", False),
    ("freq_masks", "[0", "inf)", True), ("freq_width", "[0", "inf)", True), ("time_masks", "[0", "inf)", True),
    ("time_width", "[0", "inf)", True),
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs, saved as config.json and inside every checkpoint, so a run can be rebuilt."""

    store: str = ""  # the feature store; "" = the one complete store under the cache
    features: str = ""  # for a waveform store: the variant computed on the device per batch ("" = spectrogram)
    split_kind: str = "official"  # official (the lists, speaker-disjoint) | random (the chapter's 60/20/20)
    split_seed: int = SPLIT_SEED
    model: str = "seed"  # a name in the model registry (speechcls/models): seed (the chapter's), bcresnet-8, ...
    epochs: int = 50  # the maximum; the one-cycle schedule spans all of them
    batch_size: int = 128  # per process: under torchrun a step takes batch_size x world examples
    max_lr: float = 1e-2  # chosen by the chapter from its LR finder
    patience: int = 3  # epochs without a lower validation loss before stopping
    min_epochs: int = 0  # early stopping does not count before this epoch (0 = the chapter's behaviour)
    seed: int = 0  # model init, dropout and the batch order (a function of seed and epoch)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast on CUDA; the features stay float32)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    loader: str = "auto"  # auto | device | host | stream
    workers: int = 1  # background reader threads of the streaming loader
    dropout2d: float = 0.2
    dropout: float = 0.5
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch, not each rank's part
    # --- issue 13: the keyword-spotting recipes (speechcls/engine/recipes.py fills these per --recipe) ---
    recipe: str = "chapter"  # chapter (the defaults above) | kws (the chosen model's published recipe)
    task: str = "words"  # words | kws12 | keywords (speechcls/data/tasks.py)
    keywords: tuple[str, ...] = ()  # the keywords task's labels (--keywords), in class order after silence, unknown
    noise_dir: str = ""  # background-noise recordings for _silence_ and noise mixing ("" = the tree's)
    n_mels: int = 0  # mel filters of features computed from a waveform store (0 = FeatureParams' 128)
    log: bool = False  # log(x + 1e-6) of power features, on the device (speechcls/audio/frontend.py)
    normalize: bool = False  # per-frequency standardization with the training split's statistics
    cmn: bool = False  # then each example's mean over time subtracted per frequency bin (channel normalization)
    optimizer: str = "adam"  # adam (the chapter's) | adamw | sgd (momentum 0.9, nesterov off)
    schedule: str = "onecycle"  # onecycle (the chapter's, to max_lr) | cosine (linear warm-up to max_lr, then to 0)
    warmup_epochs: float = 0.0  # cosine: epochs of linear warm-up from 0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    early_stopping: bool = True  # the chapter's; off in kws (long cosine schedules plateau before they end)
    # the kept checkpoint: lowest validation loss (the chapter's) | highest validation accuracy (acc) | the
    # final weights (last: for when the validation split is too small or unlike the test to choose by) |
    # the weights' exponential average (ema) | the average of the last swa_epochs epochs' weights (swa).
    # Every rule is tracked and tested in every run (metrics.json's test_acc_by); this one is best.pt.
    best_by: str = "loss"
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = off); evaluated and kept
    swa_epochs: int = 0  # epochs at the end whose weights the swa rule averages (0 = a quarter of --epochs, >= 1)
    # augmentation of the training split on the device (speechcls/audio/augment.py); all off in chapter
    speed: float = 0.0  # speed perturbation: factors in [1 - speed, 1 + speed] (waveform stores)
    shift_ms: float = 0.0  # random time shift in [-shift_ms, +shift_ms], zero filled (waveform stores)
    noise_prob: float = 0.0  # probability of mixing a background-noise crop into a clip (waveform stores)
    noise_volume: float = 0.1  # the crop's volume, uniform in [0, noise_volume] (TensorFlow's background_volume)
    freq_masks: int = 0  # SpecAugment frequency masks per example
    freq_width: int = 0  # their maximum width in bins
    time_masks: int = 0  # SpecAugment time masks per example
    time_width: int = 0  # their maximum width in frames
    mixup: float = 0.0  # mixup's Beta(alpha, alpha); 0 = off

    def __post_init__(self):
        # config.json and a checkpoint give the keywords back as a JSON list: the field stays a tuple
        object.__setattr__(self, "keywords", tuple(self.keywords))

    def validate(self) -> "TrainConfig":
        if self.split_kind not in ("official", "random"):
            raise ValueError(f"--split-kind {self.split_kind!r}: choose official or random")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"--precision {self.precision!r}: choose fp32, bf16 or fp16")
        if self.loader not in ("auto", "device", "host", "stream"):
            raise ValueError(f"--loader {self.loader!r}: choose auto, device, host or stream")
        if self.features not in ("", "spectrogram", "mel", "complex"):
            raise ValueError(f"--features {self.features!r}: choose spectrogram, mel or complex")
        for name, low, high, whole in _RANGES:  # every number, before anything else reads it
            check_range(f"--{name.replace('_', '-')}", getattr(self, name), low, high, whole)
        if self.batch_size < 2:
            raise ValueError("--batch-size must be at least 2 (BatchNorm1d cannot train on one example)")
        choices = {
            "recipe": ("chapter", "kws"), "task": TASKS, "optimizer": ("adam", "adamw", "sgd"),
            "schedule": ("onecycle", "cosine"), "best_by": ("loss", "acc", "last", "ema", "swa"),
        }  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: choose {' or '.join(allowed)}")
        if (self.task == "keywords") != bool(self.keywords):
            raise ValueError(
                "--keywords w1,w2 is the keywords task (its labels as classes, the others _unknown_): give the labels, "
                f"and no other --task (got --task {self.task}, --keywords {','.join(self.keywords) or 'none'})"
            )
        if self.cmn and not self.log:
            raise ValueError(
                "--cmn subtracts each example's mean in log units (where a channel's colouring is a constant per bin): "
                "add --log (power features: spectrogram or mel)"
            )
        if self.best_by in ("last", "ema", "swa") and self.early_stopping:
            what = {"last": "the final weights", "ema": "the weights' average", "swa": "the last epochs' average"}
            raise ValueError(
                f"--best-by {self.best_by} keeps {what[self.best_by]}, and early stopping stops when the validation "
                "score stops improving: choose one (add --no-early-stopping, or --best-by loss | acc)"
            )
        if self.swa_epochs < 0 or self.swa_epochs > self.epochs:
            raise ValueError(f"--swa-epochs must be in [0, --epochs {self.epochs}], got {self.swa_epochs}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"--warmup-epochs {self.warmup_epochs} is longer than --epochs {self.epochs}")
        return self

    def loader_config(self, split: str, device: str, mode: str | None = None) -> "LoaderConfig":
        """How the loader serves `split` for this run."""
        return LoaderConfig(
            split_kind=self.split_kind, split_seed=self.split_seed, batch_size=self.batch_size,
            shuffle=split == "train", seed=self.seed, device=device, mode=mode or self.loader,
            features=self.features, workers=self.workers, task=self.task, noise_dir=self.noise_dir,
            keywords=self.keywords,
        )  # fmt: skip


@dataclass(frozen=True)
class LoaderConfig:
    """How the loader serves one split of a store (loader/loader.py); the trainer builds it from TrainConfig."""

    split_kind: str = "official"  # official | random
    split_seed: int = SPLIT_SEED
    batch_size: int = 128  # per process
    shuffle: bool | None = None  # None: shuffle the train split only
    seed: int = 0  # the batch order is a function of (seed, epoch)
    device: str = "cpu"
    mode: str = "auto"  # auto | device | host | stream
    features: str = ""  # for a waveform store: the variant computed on the device per batch
    buffer_chunks: int = 4  # streaming: chunks mixed in the shuffle buffer
    workers: int = 1  # streaming: background reader threads
    own_chunks: bool = True  # streaming under torchrun: each rank reads only its own chunks
    task: str = "words"  # words (every word folder a class) | kws12 | keywords (speechcls/data/tasks.py)
    noise_dir: str = ""  # background-noise recordings ("" = the store's tree's _background_noise_)
    keywords: tuple[str, ...] = ()  # the keywords task's labels


RUNS_DIRNAME = "runs"  # runs/<name>/ under the working directory, unless --out

# --- download ----------------------------------------------------------------------------------------
CONNECT_TIMEOUT_S = 10.0  # offline, `download` must fail in seconds, not hang
DOWNLOAD_READ_BYTES = 1 << 20  # read size while streaming the archive to disk and hashing it

# --- synthetic demo data (`speechcls synth`) --------------------------------------------------------
SYNTH_DIRNAME = "synth_commands"  # data/synth_commands: where later demo steps look by default
SYNTH_VOICES = 40  # speakers; each says every word once (40 x 30 = 1,200 clips)
SYNTH_HELDOUT_PERCENT = 10  # of the speakers, for validation and again for testing (at least one each)
SYNTH_NOISE = 0.0  # background noise amplitude relative to the speech peak; 0 = clean


# --- default locations (relative to the working directory, overridable) ------------------------------
def data_dir() -> Path:
    """Where data trees live: $SPEECHCLS_DATA, else ./data."""
    return Path(os.environ.get("SPEECHCLS_DATA", "data"))


def cache_dir() -> Path | str:
    """Where feature stores live: $SPEECHCLS_CACHE (a folder or an fsspec URL such as s3://bucket/cache),
    else ./cache."""
    value = os.environ.get("SPEECHCLS_CACHE", "cache")
    return value if "://" in value and not value.startswith("file://") else Path(value.removeprefix("file://"))


def release(version: str) -> DatasetRelease:
    if version not in RELEASES:
        raise ValueError(f"unknown Speech Commands version {version!r}: choose one of {sorted(RELEASES)}")
    return RELEASES[version]


def default_root(version: str = DEFAULT_VERSION) -> Path:
    """The tree `download` writes and later stages read when no --root is given."""
    return data_dir() / release(version).name
