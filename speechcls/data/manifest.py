"""A manifest: a table of clips (where each is, what it says, who said it) instead of a folder convention.

Read once into the same DatasetIndex a tree gives (data/tree.py), so everything after featurize reads
the store and never knows which one it came from (lhotse's pattern: recipes make manifests, the rest
reads manifests). Two spellings, one table::

    path,label,split,speaker                  CSV with a header (, ; or tab, one of them), UTF-8
    clips/a.wav,hey computer,train,alice      quote a field holding the delimiter: "lights, on"
    {"path": "clips/a.wav", "label": "hey computer", "speaker": "alice"}     JSONL: one object a line

Columns: `path` and `label` (required), `split` and `speaker` (optional); no others. `path` is relative
to the manifest's folder (never absolute, never through `..`); labels are any non-empty text (spaces,
unicode, commas) and become the classes, sorted by code point as a tree's folder names are.

A clip's split: its `split` value (train | validation | test; valid, val, dev, testing, training
accepted), else Speech Commands' own rule (TF speech_commands input_data.py `which_set`, the rule that
made the release's lists) on its `speaker`, so no speaker is in two splits, else the same rule on its
file name (Speech Commands' `<speaker>_nohash_<n>` names stay speaker-disjoint).

Bad input. What makes the table unreadable as meant (a missing or unknown column, a row with more or
fewer fields than the header, mixed delimiters, an empty label, a path escaping the folder, a repeated
path, an unknown split) is a ValueError naming the manifest's line and what to do: a label is never
shifted into another column. A file that cannot be a clip (absent, a folder, shorter than
MIN_CLIP_SECONDS, MAX_CLIP_SECONDS or longer) is left out and counted, with its line, in the index's
`unusable`, as a tree's unreadable entries are; a file that is there and does not decode is skipped by
featurize, as in a tree.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.data.tree import Clip, DatasetIndex, relative_path, which_set

COLUMNS = ("path", "label", "split", "speaker")  # the first two required
REQUIRED = ("path", "label")
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
SPLIT_NAMES = {
    "train": 0, "training": 0, "validation": 1, "valid": 1, "val": 1, "dev": 1, "test": 2, "testing": 2,
}  # fmt: skip
MIN_CLIP_SECONDS = 0.1  # shorter: no word fits (FSDD's shortest digit is 0.14 s)
MAX_CLIP_SECONDS = 600.0  # ten minutes or more: a recording to cut into clips (or a noise file), not a clip
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def is_manifest(path: str | Path) -> bool:
    """A file (not a folder): what --manifest takes."""
    return Path(path).is_file()


def read_manifest(path: str | Path, check_lengths: bool = True) -> DatasetIndex:
    """The index of the clips a manifest lists (see the module's docstring). `check_lengths`: read every
    file's header and leave out the clips under MIN_CLIP_SECONDS or of MAX_CLIP_SECONDS and more."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"--manifest {path}: {'a folder' if path.is_dir() else 'no such file'}; give a CSV (path,label[,split]"
            "[,speaker] with a header) or JSONL file, or pass a tree folder with --root"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a byte-order mark (Excel writes one) is dropped
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r}); save the "
            "manifest as UTF-8"
        ) from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read the manifest ({e.strerror or e}); check its permissions") from None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise ValueError(f"{path}: the manifest is empty; write a header line (path,label) and one line a clip")
    jsonl = path.suffix.lower() in JSONL_SUFFIXES or (path.suffix.lower() not in (".csv", ".tsv") and first[0] == "{")
    rows = _jsonl_rows(path, text) if jsonl else _csv_rows(path, text)
    return _index(path, rows, check_lengths)


# --- the two spellings: (line, {column: text}) per row -------------------------------------------------
def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    lines = _lines(text)
    start = next(i for i, ln in enumerate(lines) if ln.strip())
    header_line = lines[start]
    delimiter = _delimiter(path, start + 1, header_line)
    reader = csv.reader(lines[start:], delimiter=delimiter, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as e:
        raise ValueError(f"{path}:{start + 1}: the header is not CSV ({e}); write it as path,label[,split][,speaker]")
    _check_columns(path, start + 1, header)
    rows = []
    while True:
        at = start + reader.line_num + 1  # the line the next row starts on
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ValueError(
                f"{path}:{at}: not CSV ({e}); a field holding a quote is written in quotes with the quote doubled "
                '("say ""hi""")'
            ) from None
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) != len(header):
            raise ValueError(f"{path}:{at}: {_field_count(fields, header, delimiter)}")
        rows.append((at, {name: value.strip() for name, value in zip(header, fields)}))
    return rows


def _lines(text: str) -> list[str]:
    """The text's lines, ends kept, cut at \\n, \\r\\n and \\r only: str.splitlines would also cut at
    U+2028 and other separators a label or JSON string may hold."""
    return list(io.StringIO(text, newline=""))


def _delimiter(path: Path, number: int, header: str) -> str:
    """The delimiter of the header line: the one of , ; tab it holds (outside quotes). Two of them is the
    mixed spelling a spreadsheet export sometimes writes: refused, naming both."""
    bare = re.sub(r'"[^"]*"', "", header)
    found = [d for d in DELIMITERS if d in bare]
    if len(found) > 1:
        names = " and ".join(DELIMITERS[d] for d in found)
        raise ValueError(
            f"{path}:{number}: the header mixes delimiters ({names}): {header.strip()!r}; use one delimiter "
            "throughout (path,label,split,speaker)"
        )
    if not found:
        raise ValueError(
            f"{path}:{number}: the header {header.strip()!r} has one column; a manifest needs at least path and "
            "label (path,label[,split][,speaker]), separated by commas"
        )
    return found[0]


def _field_count(fields: list[str], header: list[str], delimiter: str) -> str:
    """Why a row with the wrong number of fields is refused, and what to do."""
    shown = delimiter.join(fields)
    others = [DELIMITERS[d] for d in DELIMITERS if d != delimiter and d in shown]
    if others:
        return (
            f"{len(fields)} field(s) where the header has {len(header)} ({', '.join(header)}), and a "
            f"{' / '.join(others)}: mixed delimiters? The header uses {DELIMITERS[delimiter]}s; use them on every line"
        )
    if len(fields) > len(header):
        return (
            f"{len(fields)} fields where the header has {len(header)} ({', '.join(header)}): a label or path holding "
            f'a {DELIMITERS[delimiter]} must be quoted ("lights, on"), or every value after it would move a column'
        )
    return f"{len(fields)} field(s) where the header has {len(header)} ({', '.join(header)}): fill every column"


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e}); a JSONL manifest holds one object a line") from None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{path}:{number}: a JSON {type(obj).__name__}, not an object; write "
                '{"path": "...", "label": "..."} on every line'
            )
        _check_columns(path, number, list(obj))
        row = {}
        for key, value in obj.items():
            if isinstance(value, int) and not isinstance(value, bool) and key in ("label", "speaker"):
                value = str(value)  # a digit's label or a numbered speaker
            if value is None and key in ("split", "speaker"):
                value = ""
            if not isinstance(value, str):
                raise ValueError(f"{path}:{number}: {key} is {json.dumps(value)}, not text; write it as a string")
            row[key] = value.strip()
        rows.append((number, row))
    return rows


def _check_columns(path: Path, number: int, names: list[str]) -> None:
    if unknown := [n for n in names if n not in COLUMNS]:
        raise ValueError(
            f"{path}:{number}: unknown column(s) {', '.join(map(repr, unknown))}; a manifest's columns are "
            f"{', '.join(COLUMNS)} (the last two optional): rename or remove them"
        )
    if repeated := sorted(n for n, k in Counter(names).items() if k > 1):
        raise ValueError(f"{path}:{number}: column(s) {', '.join(map(repr, repeated))} given twice; keep one")
    if missing := [n for n in REQUIRED if n not in names]:
        raise ValueError(
            f"{path}:{number}: no {' or '.join(map(repr, missing))} column; a manifest needs path and label "
            "(path,label[,split][,speaker])"
        )


# --- rows -> index --------------------------------------------------------------------------------------
def manifest_path(value: str, path: Path, number: int) -> str:
    """A path cell as the relative path it names, in one spelling (`a/b.wav`; backslashes, `./`, `//`
    normalized). Refused, naming the line: empty, absolute (a drive letter too), any `..` component."""
    entry, why = relative_path(value) if value.strip() else ("", "is empty")
    if why is None and entry in (".", ""):
        why = "names the manifest's folder itself"
    if why is not None:
        raise ValueError(
            f"{path}:{number}: the path {value!r} {why}; every path is a file relative to the manifest's folder "
            f"{path.parent} and inside it: move the audio under that folder, or the manifest above the audio"
        )
    return entry


def _index(path: Path, rows: list[tuple[int, dict[str, str]]], check_lengths: bool) -> DatasetIndex:
    root = path.parent
    seen: dict[str, int] = {}
    entries = []  # (line, rel, label, split code or -1, speaker)
    for number, row in rows:
        rel = manifest_path(row["path"], path, number)
        if rel in seen:
            raise ValueError(
                f"{path}:{number}: {rel} is already on line {seen[rel]}; a clip is listed once (with one label): "
                "remove one of the lines"
            )
        seen[rel] = number
        label = row["label"]
        if not label:
            raise ValueError(f"{path}:{number}: the label of {rel} is empty; give every clip a label")
        if any(ord(ch) < 32 for ch in label):
            raise ValueError(f"{path}:{number}: the label {label!r} holds a control character (a line break?)")
        split = row.get("split", "")
        code = SPLIT_NAMES.get(split.lower(), None) if split else -1
        if code is None:
            raise ValueError(
                f"{path}:{number}: split {split!r}; choose train, validation or test (or leave it empty: split by "
                "speaker)"
            )
        entries.append((number, rel, label, code, row.get("speaker", "")))
    if not entries:
        raise ValueError(f"{path}: the manifest lists no clip; add one line a clip under the header")

    unusable = {}
    lengths = _lengths(root, [e[1] for e in entries]) if check_lengths else {}
    kept = []
    for number, rel, label, code, speaker in entries:
        why = _unusable(root / rel, lengths.get(rel))
        if why is not None:
            unusable[rel] = f"line {number}: {why}"
        else:
            kept.append((number, rel, label, code, speaker))
    if not kept:
        first = next(iter(unusable.items()))
        raise ValueError(f"{path}: none of its {len(entries)} clips can be used (e.g. {first[0]}: {first[1]})")

    classes = sorted({e[2] for e in kept})  # code-point order, as a tree's folder names
    label_of = {name: i for i, name in enumerate(classes)}
    kept.sort(key=lambda e: e[1])  # by relative path, as a tree's clips
    clips = [Clip(rel, label_of[label], speaker, 0) for _n, rel, label, _c, speaker in kept]
    official = np.array(
        [code if code >= 0 else which_set(speaker or posixpath.basename(rel)) for _n, rel, _l, code, speaker in kept],
        dtype=np.int8,
    )
    _warn_empty_splits(path, official, any(e[3] >= 0 for e in kept))
    bg_dir = root / config.BACKGROUND_DIR
    background = sorted(f"{config.BACKGROUND_DIR}/{p.name}" for p in bg_dir.glob("*.wav")) if bg_dir.is_dir() else []
    return DatasetIndex(root, classes, clips, official, {}, background, unusable, manifest=path)


def _lengths(root: Path, rels: list[str]) -> dict[str, float]:
    """Seconds of each readable file (headers only); a file soundfile cannot open is absent here (featurize
    skips it when it fails to decode, as in a tree)."""
    import soundfile as sf

    def seconds(rel: str) -> float | None:
        try:
            info = sf.info(os.path.join(root, rel))
        except Exception:  # LibsndfileError, OSError: decided by featurize's decoder
            return None
        return info.frames / info.samplerate if info.samplerate > 0 else None

    # libsndfile releases the GIL while it reads a header: threads overlap the file system's latency
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        found = dict(zip(rels, pool.map(seconds, rels)))
    return {rel: s for rel, s in found.items() if s is not None}


def _unusable(file: Path, seconds: float | None) -> str | None:
    """Why the file of a row cannot be a clip, or None."""
    if not file.exists():
        return "broken symbolic link" if file.is_symlink() else "no such file"
    if file.is_dir():
        return "a folder, not an audio file"
    if seconds is not None and seconds < MIN_CLIP_SECONDS:
        return f"{seconds:.3f} s long, under {MIN_CLIP_SECONDS} s: too short to hold a word"
    if seconds is not None and seconds >= MAX_CLIP_SECONDS:
        return (
            f"{seconds / 60:.1f} minutes long, {MAX_CLIP_SECONDS / 60:.0f} minutes or more: a recording to cut into "
            "clips, not a clip (background noise goes in --noise-dir)"
        )
    return None


def _warn_empty_splits(path: Path, codes: np.ndarray, has_column: bool) -> None:
    """Said at once: a split without clips (few speakers hashed) stops training later."""
    empty = [name for i, name in enumerate(config.SPLITS) if not (codes == i).any()]
    if empty:
        how = "its split column and the speaker hash leave" if has_column else "the split by hash of speaker leaves"
        warnings.warn(
            f"{path}: {how} {' and '.join(empty)} empty; add a split column "
            "(train, validation, test) or more speakers, or train with --split-kind random",
            stacklevel=3,
        )
