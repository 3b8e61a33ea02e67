"""Tasks: which classes a model learns from a tree's word folders (a manifest's labels), and which
examples of a split it sees.

- words (default): every word folder is a class (30 on v0.01, 35 on v0.02); every example of the
  split, labels unchanged.
- keywords (`--keywords "hey computer,lights on"`): the listed labels as classes, after `_silence_` and
  `_unknown_`, in the order given. Per split: every example of the listed labels ("known");
  `_unknown_`: ceil(known x 10 %) examples of the other labels (all of them where fewer), a seeded choice
  among the split's examples of the other labels ordered by relative path, so a tree and every store
  made from it choose the same clips; `_silence_`: ceil(known x 10 %) examples cut from background noise
  (data/noise.py). The same rule for train, validation and test, with the split's own code in the seed.
- kws12 (Warden 2018 and the papers that follow it): keywords with Speech Commands' ten (config.KWS12_WORDS:
  yes no up down left right on off stop go), so 12 classes in the order of TF's `prepare_words_list`;
  each of silence and unknown about a twelfth of the split (10 / 120). It alone accepts a tree holding
  only some of its words (its classes are the protocol's).

Pure numpy over (rows, labels, paths) of one split, so the tree index (`speechcls data info`) and a
store (the loader) give the same answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from speechcls import config

# Warden's input_data.py seeds its unknown-word shuffle with RANDOM_SEED = 59185; fixed: part of the protocol
UNKNOWN_SEED = 59185


@dataclass(frozen=True)
class Task:
    """A task over one tree's word folders. `mapping[k]`: the task label of word folder k (store label
    k), or -1 for a word that is no class of its own (kws12: a candidate for `_unknown_`)."""

    name: str
    classes: tuple[str, ...]  # the model's classes, in label order
    mapping: np.ndarray  # (K,) int64 over the store's classes
    silence: int | None  # label of `_silence_`, None where the task has none
    unknown: int | None  # label of `_unknown_`

    @property
    def needs_paths(self) -> bool:
        """The unknown choice orders its candidates by relative path."""
        return self.unknown is not None


def parse_keywords(text: str) -> tuple[str, ...]:
    """--keywords as labels: comma-separated, surrounding spaces dropped, a label holding a comma in
    double quotes (`"lights, on",off`), each once in the order given. ValueError naming the value for
    an empty list or a reserved name (`_silence_`, `_unknown_`: the task's own classes)."""
    import csv

    try:
        fields = next(csv.reader([text], skipinitialspace=True, strict=True), [])
    except csv.Error as e:
        raise ValueError(f"--keywords {text!r}: {e}; separate labels with commas, quote one holding a comma") from None
    words = tuple(dict.fromkeys(f.strip() for f in fields if f.strip()))
    if not words:
        raise ValueError(f"--keywords {text!r} names no label; give them comma-separated, e.g. --keywords yes,no")
    if reserved := [w for w in words if w in (config.SILENCE, config.UNKNOWN)]:
        raise ValueError(
            f"--keywords {text!r}: {', '.join(reserved)} is a class of every keyword task already (made from noise "
            "and from the other labels); list only your own labels"
        )
    return words


def make_task(
    name: str, store_classes: list[str] | tuple[str, ...], keywords: tuple[str, ...] | list[str] = ()
) -> Task:
    """The task `name` (config.TASKS) over these word folders (a store's classes). kws12 refuses classes
    holding none of its ten words; keywords refuses a listed label that is no class of the store."""
    store_classes = list(store_classes)
    keywords = tuple(keywords)
    if name not in config.TASKS:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(config.TASKS)}")
    if keywords and name != "keywords":
        raise ValueError(f"--keywords is its own task; --task {name} takes none: leave one of them out")
    if name == "words":
        return Task("words", tuple(store_classes), np.arange(len(store_classes), dtype=np.int64), None, None)
    if name == "kws12":
        if not set(config.KWS12_WORDS) & set(store_classes):
            raise ValueError(
                f"the kws12 task needs some of the words {', '.join(config.KWS12_WORDS)}; the word folders here are "
                f"{', '.join(store_classes)}: use --task words, or --keywords with some of these"
            )
        return keyword_task("kws12", config.KWS12_WORDS, store_classes)  # TF prepare_words_list's order
    if not keywords:
        raise ValueError("the keywords task needs its labels: --keywords w1,w2,...")
    if absent := [w for w in keywords if w not in store_classes]:
        shown = ", ".join(store_classes[:40]) + (
            f" ... ({len(store_classes)} in all)" if len(store_classes) > 40 else ""
        )
        raise ValueError(
            f"--keywords: {', '.join(map(repr, absent))} {'is' if len(absent) == 1 else 'are'} no class of the store; "
            f"its classes are {shown}: list some of these (a label as written, case and spaces included)"
        )
    return keyword_task("keywords", keywords, store_classes)


def keyword_task(name: str, words: tuple[str, ...], store_classes: list[str]) -> Task:
    """`_silence_`, `_unknown_`, then `words`: a store class among them is its own class, every other one
    a candidate for `_unknown_` (-1)."""
    classes = (config.SILENCE, config.UNKNOWN, *words)
    position = {w: i for i, w in enumerate(classes) if i >= 2}
    mapping = np.array([position.get(w, -1) for w in store_classes], dtype=np.int64)
    return Task(name, classes, mapping, silence=0, unknown=1)


@dataclass(frozen=True)
class TaskSplit:
    """What one split of a task is: `rows` (sorted, a subset of the rows given to task_split) with
    their task `labels`, then `n_silence` silence examples labelled `task.silence`."""

    task: Task
    split: str
    rows: np.ndarray  # (M,) int64, sorted
    labels: np.ndarray  # (M,) int64 task labels of `rows`
    n_silence: int
    n_unknown: int  # of `rows`, those labelled `_unknown_`
    n_known: int  # of `rows`, those of the task's own words (every row for words)

    @property
    def classes(self) -> list[str]:
        return list(self.task.classes)

    @property
    def n(self) -> int:
        """Examples of the split: rows, then silence."""
        return len(self.rows) + self.n_silence

    def all_labels(self) -> np.ndarray:
        """(n,) int64: the rows' labels, then the silence examples' label."""
        silence = -1 if self.task.silence is None else self.task.silence  # -1: never used (no silence examples)
        return np.concatenate([self.labels, np.full(self.n_silence, silence, dtype=np.int64)])

    def counts(self) -> dict[str, int]:
        """Examples of each class, in class order."""
        per = np.bincount(self.all_labels(), minlength=len(self.task.classes))
        return {name: int(c) for name, c in zip(self.task.classes, per)}


def task_split(
    task: Task,
    rows: np.ndarray,
    labels: np.ndarray,
    paths: np.ndarray | list[str] | None,
    split: str,
    seed: int = UNKNOWN_SEED,
) -> TaskSplit:
    """The examples of `split` that `task` uses.

    rows: (N,) the split's examples (store rows, or clip indices of a tree index), sorted; labels: (N,)
    their word-folder labels; paths: (N,) their relative paths (needed by kws12: the unknown choice
    permutes the candidates sorted by path with default_rng([seed, split code]), so it depends on the
    set of paths of the split and the seed only, not on a store's row order).
    """
    split = "validation" if split == "valid" else split  # the chapter's log name
    if split not in config.SPLITS:
        raise ValueError(f"unknown split {split!r}: choose {', '.join(config.SPLITS)}")
    rows = np.asarray(rows, dtype=np.int64)
    mapped = task.mapping[np.asarray(labels, dtype=np.int64)]
    if task.unknown is None:
        return TaskSplit(task, split, rows, mapped, 0, 0, len(rows))
    known = np.flatnonzero(mapped >= 0)
    others = np.flatnonzero(mapped < 0)
    n_known = len(known)
    n_unknown = min(math.ceil(n_known * config.UNKNOWN_PERCENT / 100), len(others))
    n_silence = math.ceil(n_known * config.SILENCE_PERCENT / 100) if task.silence is not None else 0
    if paths is None:
        raise ValueError(
            f"the {task.name} task needs the paths of the split's examples (its unknown choice orders by path)"
        )
    by_path = np.array(sorted(others, key=lambda i: str(paths[i])), dtype=np.int64)  # code-point order
    code = config.SPLITS.index(split)
    chosen = by_path[np.random.default_rng([seed, code]).permutation(len(by_path))[:n_unknown]]
    take = np.sort(np.concatenate([known, chosen]))
    out = mapped[take]
    out[out < 0] = task.unknown
    return TaskSplit(task, split, rows[take], out, n_silence, n_unknown, n_known)


def task_counts(task: Task, labels: np.ndarray, paths, codes: np.ndarray, seed: int = UNKNOWN_SEED) -> dict:
    """{split: {class: examples}} of a whole tree or store: labels, paths and split codes (N,) of every
    decoded example (codes index config.SPLITS). What `speechcls data info --task` prints."""
    labels, codes = np.asarray(labels), np.asarray(codes)
    out = {}
    for code, split in enumerate(config.SPLITS):
        rows = np.flatnonzero(codes == code)
        view = task_split(task, rows, labels[rows], None if paths is None else np.asarray(paths)[rows], split, seed)
        out[split] = view.counts()
    return out
