"""`speechcls stream eval`: a model judged as a deployed keyword spotter, false rejects at a rate of false
accepts per hour, on a stream from `speechcls stream build`.

The detections are listen's (listen.posteriors, smooth, decide: one code path), computed once per stream
and decided again at every threshold of THRESHOLDS. Matching, for each threshold, the detections in time
order against the labels (TensorFlow's test_streaming_accuracy, with the issue's rules):

- a detection *lies on* a label where its time (the word's centre as listen places it) is within
  `tolerance_ms` of the label's spoken part [start, end];
- a detection of a keyword lying on a label of that word is a **hit**, counted once: the first one; a
  further detection of the same label is a **false accept** (the device fired twice);
- a detection of a keyword lying on a keyword label of another word, and on none of its own, is
  **wrong** (TensorFlow's third number): counted against that label, not as a false accept;
- every other detection (in the background, on an `_unknown_` distractor) is a **false accept**;
- a keyword label without a hit is a **false reject** (whatever else was detected on it).

FRR = false rejects / keyword labels; FA/h = false accepts / hours of stream; wrong = labels with a
wrong-word detection / keyword labels. Only the stream's keywords are reported (PREFIX.json's, else the
words of the labels): the model's other classes, like `_silence_` and `_unknown_`, still win windows and
keep the keywords quiet, as they would on a device listening for those words.

The **operating point** is the threshold with the lowest FRR whose FA/h is at most the target (ties: the
lowest FA/h, then the highest threshold); none where no threshold reaches the target. It is written to
the run (streaming.json, `read_operating_point`), into the export's metadata, and listen takes it.
On a stream of M minutes one false accept is 60 / M FA/h: a 10-minute stream tells 0 from 6 FA/h, so "at
most 1 FA/h" there means no false accept at all (the table says how long the stream was).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.infer.stream_results import MARK, result_paths
from speechcls.runtime import check_out, write_text_atomic

# the sweep: fine near 1, where a confident model's false accepts live
THRESHOLDS = tuple(
    sorted({round(float(t), 4) for t in (*np.arange(0.05, 0.95, 0.05), *np.arange(0.95, 0.99, 0.005))}
           | {0.99, 0.992, 0.994, 0.996, 0.998, 0.999})
)  # fmt: skip
TARGET_FA_PER_HOUR = 1.0  # the operating point's: PaddleSpeech's hey_snips reports FRR at 1 FA/h
REPORTED_FA_PER_HOUR = (1.0, 0.1)  # FRR read off the curve at these (microWakeWord's 0.122 is near 0.1)
TOLERANCE_MS = 500.0  # of a label's spoken part: half a window, as listen places a word within its windows
CSV_FIELDS = ("threshold", "word", "frr", "fa_per_hour", "wrong", "labels", "hits", "false_accepts", "wrongs")
ALL = "all"  # the word column of the rows over every keyword


# --- labels ----------------------------------------------------------------------------------------------
def read_labels(path: Path, seconds: float) -> list[dict]:
    """PREFIX.csv: rows {word, start, end, line}, in time order. Refused in one line naming the file and the
    line: no header `word,start,end` (an empty file), a time that is no number, start >= end, a label
    past the end of the audio (`seconds`) or before its start, two labels that overlap. A header alone is
    a stream without words (for false accepts alone)."""
    from speechcls.infer.stream import LABEL_FIELDS

    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise ValueError(f"--labels {path}: not a text file; give the PREFIX.csv stream build wrote") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ValueError(
            f"--labels {path}: the file is empty; it needs the header word,start,end (stream build writes it)"
        )
    if tuple(c.strip() for c in rows[0]) != LABEL_FIELDS:
        raise ValueError(f"--labels {path}: line 1 is {','.join(rows[0])!r}, not the header word,start,end")
    labels = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 3:
            raise ValueError(f"--labels {path}: line {number} has {len(row)} fields, not word,start,end")
        word = row[0].strip()
        try:
            start, end = float(row[1]), float(row[2])
        except ValueError:
            raise ValueError(
                f"--labels {path}: line {number}: start and end must be seconds, got {row[1]!r}, {row[2]!r}"
            ) from None
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise ValueError(f"--labels {path}: line {number}: need 0 <= start < end, got {start:g}, {end:g}")
        if end > seconds + 1e-3:
            raise ValueError(
                f"--labels {path}: line {number}: the label ends at {end:g} s, past the end of the audio "
                f"({seconds:.3f} s): labels of another stream?"
            )
        labels.append({"word": word, "start": start, "end": end, "line": number})
    labels.sort(key=lambda x: x["start"])
    for a, b in zip(labels, labels[1:]):
        if b["start"] < a["end"]:
            raise ValueError(
                f"--labels {path}: the labels of lines {a['line']} ({a['word']} {a['start']:g}-{a['end']:g} s) and "
                f"{b['line']} ({b['word']} {b['start']:g}-{b['end']:g} s) overlap: one word at a time"
            )
    return labels


def stream_keywords(labels_path: Path, labels: list[dict]) -> list[str]:
    """The stream's keywords: PREFIX.json's (stream build's, also for a stream built --no-keywords), else
    the words of its labels other than _unknown_."""
    from speechcls.infer.stream import MARK as BUILT

    beside = Path(labels_path).with_suffix(".json")
    if beside.is_file():
        try:
            record = json.loads(beside.read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and record.get("mark") == BUILT and isinstance(record.get("keywords"), list):
            return [str(w) for w in record["keywords"]]
    return list(dict.fromkeys(x["word"] for x in labels if x["word"] != config.UNKNOWN))


# --- matching ---------------------------------------------------------------------------------------------
def match(detections: list[dict], labels: list[dict], keywords: list[str], tolerance_s: float) -> dict:
    """Counts of one threshold's detections against the labels (the module docstring's rules): per keyword
    and in all, {labels, hits, false_accepts, wrongs}."""
    per = {w: {"labels": 0, "hits": 0, "false_accepts": 0, "wrongs": 0} for w in keywords}
    spoken = [x for x in labels if x["word"] in per]
    for x in spoken:
        per[x["word"]]["labels"] += 1
    starts = np.array([x["start"] for x in spoken]) - tolerance_s
    ends = np.array([x["end"] for x in spoken]) + tolerance_s
    hit = np.zeros(len(spoken), bool)
    wrong = np.zeros(len(spoken), bool)
    for d in detections:
        if d["word"] not in per:
            continue
        on = np.flatnonzero((starts <= d["time"]) & (d["time"] <= ends))
        own = [i for i in on if spoken[i]["word"] == d["word"]]
        if own:
            free = [i for i in own if not hit[i]]
            if free:  # the nearest label not yet hit
                i = min(free, key=lambda i: abs((spoken[i]["start"] + spoken[i]["end"]) / 2 - d["time"]))
                hit[i] = True
                per[d["word"]]["hits"] += 1
            else:  # a second detection of a label already hit
                per[d["word"]]["false_accepts"] += 1
        elif on.size:
            for i in on:
                if not wrong[i]:
                    wrong[i] = True
                    per[spoken[i]["word"]]["wrongs"] += 1
        else:
            per[d["word"]]["false_accepts"] += 1
    total = {k: sum(v[k] for v in per.values()) for k in ("labels", "hits", "false_accepts", "wrongs")}
    return {"per_word": per, "all": total}


def _rates(c: dict, hours: float) -> dict:
    n = c["labels"]
    return {
        "frr": (n - c["hits"]) / n if n else math.nan,
        "fa_per_hour": c["false_accepts"] / hours,
        "wrong": c["wrongs"] / n if n else math.nan,
    }


def sweep(scores, classes, starts_s, clip_s, cfg, labels, keywords, hours: float, tolerance_s: float,
          thresholds=THRESHOLDS) -> list[dict]:  # fmt: skip
    """Rows of streaming.csv: for each threshold one row over all keywords (word "all"), then one per
    keyword. `scores`: listen's smoothed posteriors (N, K); the detections are listen's decide."""
    from speechcls.infer.listen import decide

    rows = []
    for t in thresholds:
        found = decide(scores, classes, starts_s, clip_s, t, cfg.refractory_ms, set(keywords), cfg.min_windows)
        counts = match(found, labels, keywords, tolerance_s)
        for word, c in [(ALL, counts["all"]), *counts["per_word"].items()]:
            rows.append({"threshold": t, "word": word, **_rates(c, hours), **c})
    return rows


def operating_point(rows: list[dict], target: float) -> dict | None:
    """The row (word "all") with the lowest FRR whose FA/h <= target (ties: lowest FA/h, then highest
    threshold); for a stream without keyword labels (FRR undefined), the lowest threshold that reaches the
    target. None where no threshold does."""
    ok = [r for r in rows if r["word"] == ALL and r["fa_per_hour"] <= target + 1e-12]
    if not ok:
        return None
    key = lambda r: (0.0 if math.isnan(r["frr"]) else r["frr"], r["fa_per_hour"], -r["threshold"])  # noqa: E731
    if all(math.isnan(r["frr"]) for r in ok):
        key = lambda r: r["threshold"]  # noqa: E731
    return min(ok, key=key)


def frr_at(rows: list[dict], fa_per_hour: float) -> dict | None:
    """The operating point at `fa_per_hour`: what the table reports as 'FRR at F FA/h'."""
    return operating_point(rows, fa_per_hour)


# --- the command ----------------------------------------------------------------------------------------
def read_stream(path: Path, sample_rate: int, clip_samples: int) -> np.ndarray:
    """The stream as float32 samples, refused in one line where it is not what stream build writes for the
    model: mono at the model's sample rate, at least one window long."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # LibsndfileError: not audio, a missing file
        if not Path(path).is_file():
            raise ValueError(f"{path}: no such file; make a stream with `speechcls stream build`") from None
        raise ValueError(f"{path}: not readable audio ({e})") from None
    if info.channels != 1:
        raise ValueError(
            f"{path}: {info.channels} channels; stream eval reads a mono stream (stream build writes one): which "
            "channel holds the words is not known; mix it down first (e.g. sox in.wav -c 1 out.wav)"
        )
    if info.samplerate != sample_rate:
        raise ValueError(
            f"{path}: {info.samplerate} Hz, the model hears {sample_rate} Hz; build the stream at the model's rate "
            "(stream build --store with the model's store), or resample it (the labels' times stay valid)"
        )
    from speechcls.audio.decode import BadAudio, read_audio

    try:
        audio, _ = read_audio(Path(path))
    except BadAudio as e:
        raise ValueError(f"{path}: not readable audio ({e})") from None
    if len(audio) < clip_samples:
        raise ValueError(
            f"{path}: {len(audio) / sample_rate:.3f} s, shorter than one window of the model "
            f"({clip_samples / sample_rate:g} s): nothing to judge; build a longer stream (--minutes)"
        )
    if np.abs(audio).max(initial=0) > 1.0:
        raise ValueError(f"{path}: samples outside [-1, 1] (a float WAV?); scale it into full scale")
    return audio


def evaluate_stream(
    model: str | Path,
    wav: str | Path,
    labels_path: str | Path,
    cfg=None,
    target: float = TARGET_FA_PER_HOUR,
    tolerance_ms: float = TOLERANCE_MS,
    device: str = "auto",
    overwrite: bool = False,
) -> dict:
    """Judge `model` on the stream: writes result_paths(model) (streaming.csv: the sweep; streaming.json:
    the operating point, FRR at REPORTED_FA_PER_HOUR, what was measured with) and returns the JSON's
    content, plus "rows" (the sweep). The stream and labels are checked before the model runs."""
    from speechcls.infer.listen import ListenConfig, choose_way, open_checked, posteriors, smooth, smooth_width

    cfg = (cfg or ListenConfig()).validate()
    config.check_range("--target-fa-per-hour", target, "[0", "inf)")
    config.check_range("--tolerance-ms", tolerance_ms, "[0", "inf)")
    wav, labels_path = Path(wav), Path(labels_path)
    out = result_paths(model)
    from speechcls.runtime import marked

    ours = marked(MARK.encode())(out["json"])
    for path in out.values():
        check_out(path, reads=(wav, labels_path), own=lambda p: ours, overwrite=overwrite, command="stream eval")
    if not labels_path.is_file():
        raise ValueError(f"--labels {labels_path}: no such file; stream build writes PREFIX.csv beside PREFIX.wav")
    scorer = open_checked(model, device, cfg.batch_size)
    rate, clip = scorer.sample_rate, scorer.clip_samples
    audio = read_stream(wav, rate, clip)
    seconds = len(audio) / rate
    labels = read_labels(labels_path, seconds)
    keywords = stream_keywords(labels_path, labels)
    known = set(scorer.classes)
    strangers = sorted({x["word"] for x in labels if x["word"] != config.UNKNOWN and x["word"] not in known})
    strangers += [w for w in keywords if w not in known and w not in strangers]
    if strangers:
        raise ValueError(
            f"--labels {labels_path}: the word{'s' if len(strangers) > 1 else ''} {', '.join(strangers)} "
            f"{'are' if len(strangers) > 1 else 'is'} no class of the model {model} (its classes: "
            f"{', '.join(scorer.classes)}); build the stream with --keywords among them"
        )
    notes = []
    if not ({config.SILENCE, config.UNKNOWN} & known):
        notes.append(
            "the model has no _silence_ or _unknown_ class: the background and other words are kept quiet by "
            "the threshold alone (a kws12 run has both)"
        )
    hop = max(1, round(cfg.hop_ms * rate / 1000))
    way, why = choose_way(scorer, hop, cfg.way)
    t0 = time.perf_counter()
    starts, probs = posteriors(audio, scorer, hop, cfg.batch_size, way)
    compute = time.perf_counter() - t0
    if not np.isfinite(probs).all():
        raise ValueError(f"{model}: its posteriors on {wav} are not finite; a damaged model?")
    scores = smooth(probs, smooth_width(cfg))
    hours = seconds / 3600
    rows = sweep(scores, scorer.classes, starts / rate, clip / rate, cfg, labels, keywords, hours, tolerance_ms / 1000)
    point = operating_point(rows, target)
    settings = cfg.settings()
    stream = wav.name
    record = {
        "mark": MARK,
        "format": 1,
        "model": str(model),
        "stream": str(wav),
        "labels": str(labels_path),
        "seconds": seconds,
        "keywords": keywords,
        "keyword_labels": sum(1 for x in labels if x["word"] in keywords),
        "unknown_labels": sum(1 for x in labels if x["word"] == config.UNKNOWN),
        "listen": settings,
        "tolerance_ms": tolerance_ms,
        "target_fa_per_hour": target,
        "fa_per_hour_resolution": 1 / hours,
        "way": way,
        "way_why": why,
        "realtime": seconds / max(compute, 1e-9),
        "notes": notes,
        "operating_point": None
        if point is None
        else {
            "threshold": point["threshold"],
            "frr": point["frr"],
            "fa_per_hour": point["fa_per_hour"],
            "wrong": point["wrong"],
            "target_fa_per_hour": target,
            "listen": settings,
            "stream": stream,
            "model": str(model),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },  # fmt: skip
        "frr_at": {f"{f:g}": _brief(frr_at(rows, f)) for f in REPORTED_FA_PER_HOUR},
    }
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(r[k], float) and math.isnan(r[k]) else r[k]) for k in CSV_FIELDS})
    write_text_atomic(out["csv"], text.getvalue())
    write_text_atomic(out["json"], json.dumps(_jsonable(record), indent=1) + "\n")
    return record | {"rows": rows, "files": {k: str(v) for k, v in out.items()}}


def _brief(row: dict | None) -> dict | None:
    return None if row is None else {k: row[k] for k in ("threshold", "frr", "fa_per_hour", "wrong")}


def _jsonable(x):
    """NaN (FRR of a stream without keywords) as null: JSON has no NaN."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return x
