"""Every default of speechcls in one commented place. No torch import here: the CLI reads this module
before any command runs, and `speechcls --help` must stay instant."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# --- audio -------------------------------------------------------------------------------------------
SAMPLE_RATE = 16_000  # Speech Commands is recorded (or converted by its authors) at 16 kHz
CLIP_SAMPLES = 16_000  # every clip is padded with zeros / truncated to exactly one second

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

# --- download ----------------------------------------------------------------------------------------
CONNECT_TIMEOUT_S = 10.0  # offline, `download` must fail in seconds, not hang
CHUNK_BYTES = 1 << 20  # read size while streaming the archive to disk and hashing it

# --- synthetic demo data (`speechcls synth`) --------------------------------------------------------
SYNTH_DIRNAME = "synth_commands"  # data/synth_commands: where later demo steps look by default
SYNTH_VOICES = 40  # speakers; each says every word once (40 x 30 = 1,200 clips)
SYNTH_HELDOUT_PERCENT = 10  # of the speakers, for validation and again for testing (at least one each)
SYNTH_NOISE = 0.0  # background noise amplitude relative to the speech peak; 0 = clean


# --- default locations (relative to the working directory, overridable) ------------------------------
def data_dir() -> Path:
    """Where data trees live: $SPEECHCLS_DATA, else ./data."""
    return Path(os.environ.get("SPEECHCLS_DATA", "data"))


def cache_dir() -> Path:
    """Where feature stores live: $SPEECHCLS_CACHE, else ./cache."""
    return Path(os.environ.get("SPEECHCLS_CACHE", "cache"))


def release(version: str) -> DatasetRelease:
    if version not in RELEASES:
        raise ValueError(f"unknown Speech Commands version {version!r}: choose one of {sorted(RELEASES)}")
    return RELEASES[version]


def default_root(version: str = DEFAULT_VERSION) -> Path:
    """The tree `download` writes and later stages read when no --root is given."""
    return data_dir() / release(version).name
