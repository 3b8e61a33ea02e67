"""`speechcls stream build`: a long test recording and its labels, made deterministically from one split.

TensorFlow's speech_commands generate_streaming_test_wav.py, with the split rules of this package:

- **background**: crops of the background-noise recordings, from the split's region of each one only
  (config.NOISE_REGIONS, the kws12 rule of data/noise.py: a test stream hears no noise that training
  mixed in or cut `_silence_` from), each crop 2 to 8 s (or its whole region where shorter), scaled to
  BACKGROUND_RMS and joined with 10 ms cross-fades. Where the regions hold less noise than the stream is
  long, the crops repeat: the labels file's JSON beside it says how many seconds of distinct noise there were;
- **words**: the split's clips, each used once before any is used again (a seeded permutation), placed
  whole at known times, never overlapping, GAP_S apart (uniform); a keyword (default: the kws12 words the
  tree has, else every word) or, with probability `unknown_share`, another word of the tree as a
  distractor, labelled `_unknown_`. Each clip is scaled to a signal-to-noise ratio drawn uniformly from
  `snr_db` (speech power over its spoken part against the background's power under it);
- **labels**: PREFIX.csv, `word,start,end` in seconds, the spoken part of each clip (where its 10 ms
  frames reach a tenth of the loudest one's RMS, SPEECH_REL_RMS), in time order;
- **deterministic**: every choice is drawn from one generator seeded by (STREAM_SEED, seed): the same
  seed, tree and noise give the same bytes.

PREFIX.wav is 16-bit PCM mono at the source's sample rate (a store's, else 16 kHz); PREFIX.json records
what the stream was built from and with (stream eval reads its keywords).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.runtime import atomic_write, check_out, check_out_dir, marked, write_text_atomic

STREAM_SEED = 24  # a fixed part of the protocol: mixed with --seed into the one generator
MARK = "speechcls stream build"  # in PREFIX.json: how a rerun knows its own earlier files
LABEL_FIELDS = ("word", "start", "end")
GAP_S = (1.0, 3.0)  # silence (background) between one clip's end and the next one's start: TF's word_gap_ms is 2,000
CROP_S = (2.0, 8.0)  # background crops: long enough to sound continuous, short enough to mix sources
BACKGROUND_RMS = 0.02  # -34 dBFS: room for a word 20 dB above it (RMS 0.2) before it clips
SPEECH_REL_RMS = 0.1  # a clip's spoken part: 10 ms frames whose RMS reaches -20 dB of its loudest frame
FADE_S = 0.01  # cross-fade between background crops: no click at a join
MIN_REGION_S = 0.1  # a recording whose split region is shorter gives no crop


@dataclass(frozen=True)
class StreamSpec:
    """What `speechcls stream build` makes (its options)."""

    split: str = "test"
    minutes: float = 10.0  # TensorFlow's streaming test wav: 10 minutes
    snr_db: tuple[float, float] = (5.0, 20.0)  # per word, uniform
    unknown_share: float = 0.25  # of the clips placed: other words, labelled _unknown_
    seed: int = 0
    keywords: tuple[str, ...] = ()  # () = the kws12 words the tree has, else every word
    no_keywords: bool = False  # the keywords' places left to the background: false accepts alone

    def validate(self) -> "StreamSpec":
        if self.split not in config.SPLITS:
            raise ValueError(f"--split {self.split!r}: choose one of {', '.join(config.SPLITS)}")
        config.check_range("--minutes", self.minutes, "(0", "1440]")  # a day: 2.8 GB of 16 kHz PCM
        lo, hi = self.snr_db
        for v in (lo, hi):
            config.check_range("--snr-db", v, "[-60", "100]")
        if lo > hi:
            raise ValueError(f"--snr-db {lo:g},{hi:g}: the low end is above the high end; give LO,HI")
        config.check_range("--unknown-share", self.unknown_share, "[0", "1]")
        config.check_range("--seed", self.seed, "[0", f"{2**32 - 1}]", whole=True)
        return self


def parse_range(text: str, option: str = "--snr-db") -> tuple[float, float]:
    """`LO,HI` (or one number for both) -> (lo, hi); ValueError naming the option."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{option} {text!r}: give two numbers, LO,HI (e.g. 5,20)") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise ValueError(f"{option} {text!r}: give two numbers, LO,HI (e.g. 5,20)")
    return values[0], values[1]


def prefix_paths(prefix: str | Path) -> dict[str, Path]:
    """PREFIX -> {"wav", "csv", "json"}: PREFIX.wav, PREFIX.csv, PREFIX.json (a .wav or .csv suffix given
    with the prefix is dropped)."""
    prefix = Path(prefix)
    if prefix.suffix.lower() in (".wav", ".csv", ".json"):
        prefix = prefix.with_suffix("")
    return {kind: prefix.with_name(prefix.name + "." + kind) for kind in ("wav", "csv", "json")}


def speech_span(clip: np.ndarray, sample_rate: int) -> tuple[int, int] | None:
    """(first, end) samples of the spoken part of a clip (SPEECH_REL_RMS); None for a clip with no sound."""
    frame = max(1, sample_rate // 100)
    n = len(clip) // frame
    if n == 0:
        return None
    rms = np.sqrt(np.mean(clip[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    if not rms.max() > 0:
        return None
    loud = np.flatnonzero(rms >= SPEECH_REL_RMS * rms.max())
    return int(loud[0] * frame), int(min(len(clip), (loud[-1] + 1) * frame))


@dataclass
class _Source:
    root: Path
    paths: list[str]  # the split's clips, sorted
    words: list[str]  # each clip's word folder
    classes: list[str]
    sample_rate: int
    described: str


def _from_tree(root: Path, split: str) -> _Source:
    from speechcls.data.tree import index_tree

    index = index_tree(root)
    codes = index.split("official")
    rows = np.flatnonzero(codes == config.SPLITS.index(split))
    paths = [index.clips[i].path for i in rows]
    return _Source(
        root, paths, [index.classes[index.clips[i].label] for i in rows], list(index.classes), config.SAMPLE_RATE,
        f"tree {root}",
    )  # fmt: skip


def _from_store(store: str, split: str) -> _Source:
    from speechcls.store.format import params_from_attrs
    from speechcls.store.reader import open_store, read_all, split_rows

    group = open_store(store)
    attrs = dict(group.attrs)
    root = (attrs.get("dataset") or {}).get("source_root")
    if not root or not Path(root).is_dir():
        raise ValueError(
            f"--store {store}: its source tree {root or '(none recorded)'} is not on this machine, and stream build "
            "reads the clips from the tree; pass --root with the tree"
        )
    rows = split_rows(group, split)
    paths, labels, classes = read_all(group, "path"), read_all(group, "label"), list(attrs["classes"])
    order = sorted(rows.tolist(), key=lambda r: str(paths[r]))
    return _Source(
        Path(root), [str(paths[r]) for r in order], [classes[int(labels[r])] for r in order], classes,
        params_from_attrs(attrs).sample_rate, f"store {store} (tree {root})",
    )  # fmt: skip


def choose_keywords(classes: list[str], given: tuple[str, ...]) -> list[str]:
    """The stream's keywords: `given` (each a word folder of the tree), else the kws12 words the tree has,
    else every word."""
    if given:
        unknown = [w for w in given if w not in classes]
        if unknown:
            raise ValueError(
                f"--keywords {','.join(unknown)}: no such word folder in the tree (it has {', '.join(classes)})"
            )
        return list(dict.fromkeys(given))
    kws = [w for w in config.KWS12_WORDS if w in classes]
    return kws or list(classes)


def _background(regions: list[np.ndarray], n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of background: crops of `regions` at BACKGROUND_RMS, cross-faded. (n,) float32."""
    out = np.zeros(n, dtype=np.float32)
    fade = max(1, int(FADE_S * rate))
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    at = 0
    while at < n:
        region = regions[int(rng.integers(len(regions)))]
        length = min(len(region), int(rng.uniform(*CROP_S) * rate))
        start = int(rng.integers(0, len(region) - length + 1))
        crop = region[start : start + length].astype(np.float32)
        rms = float(np.sqrt(np.mean(crop.astype(np.float64) ** 2)))
        crop = crop * np.float32(BACKGROUND_RMS / rms) if rms > 0 else crop
        if at > 0 and length > 2 * fade:  # the crop's first `fade` samples over the last ones laid down
            begin = at - fade
            out[begin:at] = out[begin:at] * ramp[::-1] + crop[:fade] * ramp
            crop = crop[fade:]
        take = min(len(crop), n - at)
        out[at : at + take] = crop[:take]
        at += take
    return out


def build_stream(prefix: str | Path, *, root: str | Path | None = None, store: str | None = None,
                 spec: StreamSpec = StreamSpec(), noise_dir: str | Path | None = None) -> dict:  # fmt: skip
    """Write PREFIX.wav, PREFIX.csv and PREFIX.json (the module docstring says how); returns the JSON's
    content. Exactly one of `root` (a tree) and `store` (a feature store, whose tree the clips are read
    from and whose official split is used)."""
    import soundfile as sf

    from speechcls.audio.decode import BadAudio, read_at
    from speechcls.data.noise import load_noise, split_region

    spec.validate()
    if (root is None) == (store is None):
        raise ValueError("give one of --root TREE and --store STORE: the split's clips come from it")
    files = prefix_paths(prefix)
    check_out_dir(files["wav"].parent, option="--out", command="stream build")
    own = marked(MARK.encode())
    ours = own(files["json"])
    for path in files.values():
        check_out(path, own=lambda p: ours, command="stream build")
    source = _from_store(store, spec.split) if store is not None else _from_tree(Path(root), spec.split)
    if not source.paths:
        raise ValueError(f"{source.described}: no clip in its {spec.split} split; choose another --split")
    keywords = choose_keywords(source.classes, spec.keywords)
    others = [w for w in source.classes if w not in keywords]
    folder = Path(noise_dir) if noise_dir else source.root / config.BACKGROUND_DIR
    if not folder.is_dir():
        raise ValueError(
            f"{folder}: no such folder of background noise; the tree has no {config.BACKGROUND_DIR}: pass --noise-dir "
            "with a folder of background .wav files (e.g. a `speechcls synth` tree's)"
        )
    rate = source.sample_rate
    recordings = load_noise(folder, rate, 1)
    regions = [r for r in (split_region(x, spec.split) for x in recordings) if len(r) >= MIN_REGION_S * rate]
    if not regions:
        raise ValueError(
            f"{folder}: no recording has {MIN_REGION_S} s in its {spec.split} region "
            f"{config.NOISE_REGIONS[spec.split]}; use longer recordings (--noise-dir)"
        )

    rng = np.random.default_rng([STREAM_SEED, spec.seed])
    n = int(round(spec.minutes * 60 * rate))
    audio = _background(regions, n, rate, rng)
    pools = {
        "keyword": [i for i, w in enumerate(source.words) if w in keywords],
        "unknown": [i for i, w in enumerate(source.words) if w in others],
    }
    orders = {k: [v[j] for j in rng.permutation(len(v))] for k, v in pools.items()}
    used = {k: 0 for k in pools}
    labels, skipped, placed, left_out = [], {}, {"keyword": 0, "unknown": 0}, 0
    at = int(rng.uniform(*GAP_S) * rate)
    while True:
        kind = (
            "unknown"
            if orders["unknown"] and (not orders["keyword"] or rng.random() < spec.unknown_share)
            else "keyword"
        )
        if not orders[kind]:
            break  # no usable clip left
        i = int(orders[kind][used[kind] % len(orders[kind])])
        used[kind] += 1
        snr = rng.uniform(*spec.snr_db)
        gap = int(rng.uniform(*GAP_S) * rate)
        try:
            clip, _ = read_at(source.root / source.paths[i], rate)
            span = speech_span(clip, rate)
            if span is None:
                raise BadAudio("no sound")
        except (BadAudio, OSError) as e:  # left out of the stream, and named in its JSON
            skipped[source.paths[i]] = str(e)
            orders[kind].remove(i)
            continue
        if at + len(clip) > n:
            break
        if kind == "keyword" and spec.no_keywords:
            left_out += 1
        else:
            a, b = span
            speech = float(np.mean(clip[a:b].astype(np.float64) ** 2))
            noise = float(np.mean(audio[at + a : at + b].astype(np.float64) ** 2))
            gain = np.sqrt(max(noise, 1e-12) * 10 ** (snr / 10) / speech)
            audio[at : at + len(clip)] += (gain * clip).astype(np.float32)
            word = source.words[i] if kind == "keyword" else config.UNKNOWN
            labels.append((word, (at + a) / rate, (at + b) / rate, source.paths[i], round(float(snr), 2)))
            placed[kind] += 1
        at += len(clip) + gap
    clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
    np.clip(audio, -1.0, 1.0, out=audio)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(LABEL_FIELDS)
    for word, start, end, *_ in labels:
        writer.writerow([word, f"{start:.4f}", f"{end:.4f}"])
    record = {
        "mark": MARK,
        "format": 1,
        "source": source.described,
        "spec": asdict(spec) | {"snr_db": list(spec.snr_db), "keywords": list(spec.keywords)},
        "keywords": keywords,
        "unknown_words": others,
        "sample_rate": rate,
        "seconds": n / rate,
        "placed": placed,
        "keywords_left_out": left_out,
        "noise": {
            "folder": str(folder),
            "region": list(config.NOISE_REGIONS[spec.split]),
            "distinct_seconds": round(sum(len(r) for r in regions) / rate, 2),
            "recordings": len(regions),
        },
        "clipped_samples": clipped,
        "skipped": skipped,
        "clips": [{"word": w, "start": s, "end": e, "path": p, "snr_db": snr} for w, s, e, p, snr in labels],
        "files": {k: str(v) for k, v in files.items()},
    }
    atomic_write(files["wav"], lambda tmp: sf.write(str(tmp), audio, rate, subtype="PCM_16", format="WAV"))
    write_text_atomic(files["csv"], text.getvalue())
    write_text_atomic(files["json"], json.dumps(record, indent=1) + "\n")
    return record
