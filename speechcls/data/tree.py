"""The index of a Speech Commands tree and its two splits; every later stage starts from here.

Official layout::

    ROOT/<word>/<speaker>_nohash_<n>.wav      one folder per class, sorted names = class indices
    ROOT/validation_list.txt                   relative paths, one a line (speaker-disjoint)
    ROOT/testing_list.txt
    ROOT/_background_noise_/*.wav              long noise recordings, not a class
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechcls import config

# `<speaker>_nohash_<n>.wav`: the speaker id is everything before `_nohash_` (hex in the release).
_CLIP_NAME = re.compile(r"^(?P<speaker>.+?)_nohash_(?P<utterance>\d+)\.wav$", re.IGNORECASE)


@dataclass(frozen=True)
class Clip:
    path: str  # relative to the root, POSIX separators: "bed/0a7c2a8d_nohash_0.wav"
    label: int  # index into DatasetIndex.classes
    speaker: str
    utterance: int


@dataclass
class DatasetIndex:
    """Every clip of a tree, sorted by relative path, with its label and official split."""

    root: Path
    classes: list[str]
    clips: list[Clip]
    official: np.ndarray | None  # (N,) int8 codes into config.SPLITS; None where the tree has no lists
    missing: dict[str, int] = field(default_factory=dict)  # list file -> entries naming absent files
    background: list[str] = field(default_factory=list)  # relative paths of the noise recordings
    # relative path -> reason, for *.wav entries of a word folder that are no file to read (a folder, a
    # broken link, a link loop): kept out of `clips`, listed by `speechcls data info`
    unusable: dict[str, str] = field(default_factory=dict)
    manifest: Path | None = None  # the manifest listing the clips (data/manifest.py); None for a tree

    @property
    def name(self) -> str:
        """The dataset's name: its folder name, or a manifest's file name without its suffix (it names the
        feature stores in the cache)."""
        return self.manifest.stem if self.manifest is not None else self.root.resolve().name

    @property
    def paths(self) -> list[str]:
        return [c.path for c in self.clips]

    @property
    def speakers(self) -> list[str]:
        return [c.speaker for c in self.clips]

    def split(self, kind: str = "official", seed: int = config.SPLIT_SEED) -> np.ndarray:
        """(N,) int8 split codes (0 train, 1 validation, 2 test) for `kind` "official" or "random"."""
        if kind == "random":
            return random_split(self.paths, seed)
        if kind != "official":
            raise ValueError(f"unknown split {kind!r}: choose 'official' or 'random'")
        if self.official is None:
            raise ValueError(
                f"{self.root} has no {config.VALIDATION_LIST} / {config.TESTING_LIST}, so it has no "
                "official split: use the random split (--split random) or add the lists"
            )
        return self.official


def random_split(paths: list[str], seed: int = config.SPLIT_SEED) -> np.ndarray:
    """The chapter's random 60/20/20 split, the one definition used by the index, store and trainer.

    Sorted relative paths are permuted by a generator seeded with `seed`; the first floor(60 %) of the
    permutation is train, the next floor(20 %) validation, the remainder test. The result is aligned
    with `paths` as given (any order) and depends only on the set of paths and the seed.
    Returns: (N,) int8 codes into config.SPLITS.
    """
    n = len(paths)
    order = sorted(range(n), key=paths.__getitem__)
    perm = np.random.default_rng(seed).permutation(n)
    # integer arithmetic: 0.6 * n in floats can land just under a whole number
    n_train = n * config.RANDOM_SPLIT_PERCENT[0] // 100
    n_valid = n * config.RANDOM_SPLIT_PERCENT[1] // 100
    codes = np.full(n, 2, dtype=np.int8)
    sorted_idx = np.asarray(order, dtype=np.int64)[perm]
    codes[sorted_idx[:n_train]] = 0
    codes[sorted_idx[n_train : n_train + n_valid]] = 1
    return codes


# TF speech_commands input_data.py: MAX_NUM_WAVS_PER_CLASS, and the release's 10 % validation, 10 % testing
_HASH_BUCKETS = 2**27 - 1
_HASH_PERCENT = (10.0, 10.0)


def which_set(name: str) -> int:
    """Speech Commands' own split rule (input_data.py `which_set`, the one that wrote the release's lists):
    the SHA-1 of `name` with any `_nohash_...` suffix removed, as a percentage; under 10 validation, under
    20 test, else train. A speaker id (or a `<speaker>_nohash_<n>.wav` file name) always lands in one
    split, and a new speaker never moves another. Returns the split code (0 train, 1 validation, 2 test)."""
    key = re.sub(r"_nohash_.*$", "", name)
    percent = (int(hashlib.sha1(key.encode()).hexdigest(), 16) % (_HASH_BUCKETS + 1)) * (100.0 / _HASH_BUCKETS)
    validation, testing = _HASH_PERCENT
    return 1 if percent < validation else 2 if percent < validation + testing else 0


def parse_clip_name(path: Path) -> tuple[str, int]:
    """(speaker, utterance) from `<speaker>_nohash_<n>.wav`; ValueError naming the file otherwise."""
    m = _CLIP_NAME.match(path.name)
    if m is None:
        raise ValueError(
            f"{path}: not a Speech Commands clip name; expected <speaker>_nohash_<n>.wav. "
            "Rename or remove the file, or point --root at a tree in the official layout."
        )
    return m["speaker"], int(m["utterance"])


def _read_list(root: Path, name: str) -> list[str] | None:
    path = root / name
    if not path.is_file():
        return None
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a byte-order mark some editors write is dropped
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r}); the list holds one "
            "relative path a line: save it as UTF-8, or remove it to index the tree without it"
        ) from None
    except OSError as e:
        raise ValueError(
            f"{path}: cannot read the list ({e.strerror or e}); check its permissions, or remove it to index the "
            "tree without it"
        ) from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            entries.append(list_entry(line, path, number))
    return entries


def relative_path(value: str) -> tuple[str, str | None]:
    """A path as written in a list or a manifest, in one spelling: surrounding whitespace and backslashes
    gone, `./`, `//` and `/./` normalized (posixpath.normpath). Returns (the path, None), or (the text,
    why it is refused): absolute (a drive letter too) or with any `..` component, even one that lexically
    comes back (through a linked folder the file system would not come back to the same place)."""
    entry = value.strip().replace("\\", "/")
    if entry.startswith("/") or re.match(r"^[A-Za-z]:", entry):
        return entry, "is an absolute path"
    if ".." in entry.split("/"):
        return entry, "has a '..' component"
    return posixpath.normpath(entry), None


def list_entry(line: str, path: Path, number: int) -> str:
    """A list line as the relative path it names, in the one spelling the index uses (`yes/x.wav`).

    Every spelling of the same path is the same entry: surrounding whitespace, backslashes, `./`, `//`
    and `/./` go (posixpath.normpath), so `./yes/x.wav`, `yes//x.wav`, `yes/./x.wav` and `yes\\x.wav` all
    name `yes/x.wav`. Refused, ValueError naming the list file and line: an entry that leaves the tree
    (absolute, a drive letter, any `..` component, even one that lexically comes back, as in
    `dog/../yes/x.wav`: through a linked folder the file system would not come back to the same place,
    and the release never writes one) and one that is not `<word>/<file>.wav`."""
    where = f"{path}:{number}: {line.strip()!r}"
    entry, why = relative_path(line)
    if why is None:
        parts = entry.split("/")
        if len(parts) == 2 and parts[0] not in (".", "") and parts[1].lower().endswith(".wav") and parts[1] != ".wav":
            return entry
        why = "is not a <word>/<file>.wav path"
    raise ValueError(
        f"{where} {why}; every line of the list names one clip relative to the tree, as <word>/<file>.wav "
        "(e.g. yes/0a7c2a8d_nohash_0.wav): fix or remove the line"
    )


def _is_file(entry: os.DirEntry) -> bool:
    """Path.is_file for a scandir entry: follows symbolic links, and False (not an error) for a loop."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _unusable(path: Path) -> str:
    """Why a `*.wav` entry that is not a regular file cannot be a clip."""
    if path.is_dir():
        return "a directory, not an audio file"
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop"
        if path.is_symlink() and e.errno == errno.ENOENT:
            return f"a broken symbolic link (to {os.readlink(path)})"
        return f"cannot read it: {(e.strerror or type(e).__name__).lower()}"
    return "not a regular file (a device, fifo or socket)"


def index_tree(root: str | Path) -> DatasetIndex:
    """Index a tree in the official layout. Raises ValueError naming the path for a tree without word
    folders, a clip whose name lacks `_nohash_`, a list file that is not UTF-8 text or a list line that is no
    clip path of the tree (`list_entry`). List entries naming absent files are only counted; `*.wav` entries
    that are no readable file go to `unusable`."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"{root}: no such directory. Download the dataset (speechcls download), make a synthetic "
            "one (speechcls synth), or point --root at a Speech Commands tree."
        )
    # A word folder: a visible folder that is not `_background_noise_` (nor any `_`-prefixed one).
    word_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    word_dirs = [d for d in word_dirs if any(d.glob("*.wav"))]
    if not word_dirs:
        raise ValueError(
            f"{root}: no word folders with .wav files; expected the official layout "
            "<word>/<speaker>_nohash_<n>.wav. Point --root at the folder that holds the word folders."
        )
    classes = [d.name for d in word_dirs]
    clips, unusable = [], {}
    for label, d in enumerate(word_dirs):
        # os.scandir and names as strings, not Path objects: a folder's entries come with their type, so a
        # regular file costs no stat here, and sorting strings is ~10x cheaper than sorting Paths (64,727
        # clips: the index in ~1 s less)
        with os.scandir(d) as it:
            entries = sorted((e for e in it if os.path.splitext(e.name)[1].lower() == ".wav"), key=lambda e: e.name)
        for wav in entries:
            if not _is_file(wav):
                unusable[f"{d.name}/{wav.name}"] = _unusable(Path(wav.path))
                continue
            m = _CLIP_NAME.match(wav.name)
            speaker, utterance = (m["speaker"], int(m["utterance"])) if m else parse_clip_name(Path(wav.path))
            clips.append(Clip(f"{d.name}/{wav.name}", label, speaker, utterance))
    clips.sort(key=lambda c: c.path)

    validation = _read_list(root, config.VALIDATION_LIST)
    testing = _read_list(root, config.TESTING_LIST)
    official = None
    missing = {}
    if validation is not None or testing is not None:
        position = {c.path: i for i, c in enumerate(clips)}
        official = np.zeros(len(clips), dtype=np.int8)
        for code, name, entries in ((1, config.VALIDATION_LIST, validation), (2, config.TESTING_LIST, testing)):
            absent = 0
            for entry in entries or ():
                i = position.get(entry)
                if i is None:
                    absent += 1
                elif official[i] not in (0, code):
                    raise ValueError(
                        f"{root}: {entry} is listed in both {config.VALIDATION_LIST} and "
                        f"{config.TESTING_LIST}; a clip belongs to one split. Fix the lists."
                    )
                else:
                    official[i] = code
            missing[name] = absent

    bg_dir = root / config.BACKGROUND_DIR
    background = sorted(f"{config.BACKGROUND_DIR}/{p.name}" for p in bg_dir.glob("*.wav")) if bg_dir.is_dir() else []
    return DatasetIndex(root, classes, clips, official, missing, background, unusable)


def split_counts(codes: np.ndarray) -> dict[str, int]:
    counts = Counter(int(c) for c in codes)
    return {name: counts.get(i, 0) for i, name in enumerate(config.SPLITS)}


def speakers_by_split(index: DatasetIndex, codes: np.ndarray) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {name: set() for name in config.SPLITS}
    for clip, code in zip(index.clips, codes):
        out[config.SPLITS[code]].add(clip.speaker)
    return out
