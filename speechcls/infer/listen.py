"""`speechcls listen`: spot keywords in recordings of any length with a model trained on clips.

A window of the run's clip length (one second by default) slides over the recording every `hop_ms` (the
last one zero-padded to the end); each window is classified, in batches, by the run's model on the device
(torch) or by an exported ONNX file with its front end (onnxruntime; scorers.py); the posteriors are
smoothed over time and turned into detections, as
TensorFlow's speech_commands RecognizeCommands does (average the posteriors of the last
`average_window_duration_ms`; a word is found when its averaged score is the top one and above the
threshold; a new detection is refused within `suppression_ms` of the last one):

- **smoothing**: a moving average of the posteriors over `smooth_ms` (an odd number of windows),
  centred on each window: the whole recording is at hand, so the average needs not lag behind as
  TensorFlow's streaming one does (its trailing average is the same curve, shifted by half the window);
- **a detection** is a run of consecutive windows whose top smoothed class is the same word, above
  `threshold`; `_silence_` and `_unknown_` are never reported (they still win windows, which is how
  silence and other words keep the keywords quiet);
- **where**: a window holds the whole word from when it starts at the word's end minus one second to
  when it starts at the word's start, so the word lies where the run's windows overlap: `start` is the
  last window's start, `end` the first window's end, `time` their middle, the word's centre (the
  smoothing widens the run by about as much at both ends, which leaves the middle in place; a model that
  still hears a word in part of it moves both ends inwards). A run longer than one window holds the word
  twice (said again within a second): its `start` and `end` are then the first word's end and the last
  word's start. `confidence` is the run's highest smoothed score;
- **repeats**: a detection of the same word whose time is within `refractory_ms` of the previous one is
  merged into it, its span extending the previous one's. The default, 1,000 ms, is the length of a
  Speech Commands utterance: it swallows the echoes of one word and still tells apart a word said twice
  a second apart. TensorFlow's RecognizeCommands suppresses every label for `suppression_ms` after a
  detection (500 ms by default; its test_streaming_accuracy.cc passes 1,500 ms, test_streaming_accuracy.py
  500 ms) and never repeats the previous label until another one, `_silence_` included, was detected;
- **the consecutive-window rule**: a run of fewer than `min_windows` windows is no detection (1: any);
- **the threshold**: `--threshold` where given, else the operating point `speechcls stream eval` measured
  (the run's streaming.json, an ONNX file's metadata: stream_eval.py), else DEFAULT_THRESHOLD; listen
  says which;
- **the features**: `way` "frames" computes the recording's STFT frames once and gathers each window's
  (stream_frames.py: the per-window features exactly), "windows" hands every window to the model's own
  front end; "auto" takes frames where they apply. `stream eval` calls the same posteriors, smooth and
  decide: one code path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechcls.config import SILENCE, UNKNOWN
from speechcls.infer.scorers import MAX_SAMPLE_RATE, OnnxScorer, Scorer, open_scorer
from speechcls.runtime import available_ram

NOT_REPORTED = (SILENCE, UNKNOWN)  # never reported: they are what keeps the keywords quiet
# the threshold where no operating point was measured (`speechcls stream eval` measures one)
DEFAULT_THRESHOLD = 0.8
WAYS = ("auto", "frames", "windows")  # how the windows' features are computed (posteriors)


@dataclass(frozen=True)
class ListenConfig:
    """How listen slides, smooths and decides (`speechcls listen` options)."""

    hop_ms: float = 100.0  # between window starts: 10 classifications per second of audio
    # smoothed posterior a word must exceed (TensorFlow's streaming test: 0.7); None: the model's measured
    # operating point (operating_point), else DEFAULT_THRESHOLD
    threshold: float | None = None
    smooth_ms: float = 500.0  # moving average of the posteriors (TensorFlow's streaming test: 500 ms)
    refractory_ms: float = 1000.0  # a repeat of the same word within this is merged (see the module docstring)
    batch_size: int = 64  # windows per model call
    way: str = "auto"  # frames: the recording's STFT once, slid (stream_frames.py); windows: each window's own
    # the consecutive-window rule: a run of fewer windows above the threshold is no detection (1: any run;
    # openWakeWord and microWakeWord's streaming cut-offs ask for several in a row)
    min_windows: int = 1

    def validate(self) -> "ListenConfig":
        if not (math.isfinite(self.hop_ms) and self.hop_ms > 0):
            raise ValueError(f"--hop-ms must be positive, got {self.hop_ms}")
        if self.way not in WAYS:
            raise ValueError(f"--way {self.way!r}: choose one of {', '.join(WAYS)}")
        if self.threshold is not None and not 0 <= self.threshold < 1:
            raise ValueError(f"--threshold must be in [0, 1), got {self.threshold}")
        if not (self.smooth_ms >= 0 and self.refractory_ms >= 0) or math.isinf(self.smooth_ms + self.refractory_ms):
            raise ValueError(
                f"--smooth-ms and --refractory-ms must be >= 0, got {self.smooth_ms}, {self.refractory_ms}"
            )
        if not isinstance(self.min_windows, int) or self.min_windows < 1:
            raise ValueError(f"--min-windows must be a whole number >= 1, got {self.min_windows}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        return self

    def settings(self) -> dict:
        """What an operating point was measured with: the settings that move the detections (not the
        threshold, which it chooses, nor the batch size or the way, which do not)."""
        return {
            "hop_ms": self.hop_ms, "smooth_ms": self.smooth_ms, "refractory_ms": self.refractory_ms,
            "min_windows": self.min_windows,
        }  # fmt: skip


# --- windows and posteriors --------------------------------------------------------------------------
def window_starts(n_samples: int, clip: int, hop: int) -> np.ndarray:
    """Start samples of the windows: every `hop`, the last one reaching the end (zero-padded past it)."""
    return np.arange(1 + math.ceil(max(0, n_samples - clip) / hop)) * hop


def choose_way(scorer: Scorer, hop: int, way: str = "auto") -> tuple[str, str]:
    """(way, why): "frames" (stream_frames.py: the recording's frames computed once, the model slid over
    them) where it gives the per-window features exactly and the scorer can classify features, else
    "windows" (every window through the model's own front end); `why` says why not frames ("" where
    frames). "auto" keeps an ONNX file on its own graph (measured faster there). way "frames" where it
    cannot be is a ValueError saying why."""
    from speechcls.infer.stream_frames import can_slide

    if way == "windows":
        return "windows", "asked for"
    if way == "auto" and isinstance(scorer, OnnxScorer):
        # measured (benchmarks/streaming.py, 2 shared cores, two runs): ONNX Runtime's own graph, its STFT
        # included, scored 1.3-1.7x faster than torch's frames handed to the file's classifier
        return "windows", "ONNX Runtime's whole graph measured faster than torch's frames with its classifier"
    why = can_slide(scorer.params, hop) if hasattr(scorer, "params") else "the scorer has no feature parameters"
    if why is None and isinstance(scorer, OnnxScorer) and scorer.classifier_session() is None:
        why = "the onnx package (pip install 'speechcls[export]') is needed to cut the file's classifier out"
    if why is None:
        return "frames", ""
    if way == "frames":
        raise ValueError(f"--way frames: {why}; use --way windows")
    return "windows", why


def posteriors(
    audio: np.ndarray, scorer: Scorer, hop: int, batch_size: int = 64, way: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """(starts, probs): each window's start sample and its class posteriors (N, K). The same numbers both
    ways (`choose_way`; tests/test_stream.py holds them to each other): "windows" hands the model views
    into the padded recording, copied one batch at a time, so an hour of audio (36,000 windows at a 100 ms
    hop, 2.3 GB as separate windows) costs one batch of memory; "frames" computes the recording's STFT
    frames once, in blocks of stream_frames.BLOCK_WINDOWS windows, and gathers each window's frames."""
    clip = scorer.clip_samples
    starts = window_starts(len(audio), clip, hop)
    padded = np.zeros(int(starts[-1]) + clip, dtype=np.float32)
    padded[: len(audio)] = audio
    if choose_way(scorer, hop, way)[0] == "frames":
        return starts, _by_frames(padded, starts, scorer, batch_size)
    views = np.lib.stride_tricks.sliding_window_view(padded, clip)[::hop]  # (N, clip), no copy
    probs = [scorer(np.ascontiguousarray(views[i : i + batch_size])) for i in range(0, len(starts), batch_size)]
    return starts, np.concatenate(probs).astype(np.float32)


def _by_frames(padded: np.ndarray, starts: np.ndarray, scorer: Scorer, batch_size: int) -> np.ndarray:
    """The posteriors of the windows at `starts` by the sliding way: (N, K) float32."""
    import torch

    from speechcls.infer.stream_frames import BLOCK_WINDOWS, FrameSlider

    extractor = scorer.extractor()
    device = next(iter(extractor.buffers())).device
    slider = FrameSlider(extractor, scorer.params)
    wave = torch.from_numpy(padded).to(device)
    out = []
    block = max(BLOCK_WINDOWS, batch_size)
    for b in range(0, len(starts), block):
        in_block = starts[b : b + block]
        frames = slider.block(wave, int(in_block[0]), int(in_block[-1]))  # (C, F, frames)
        for i in range(0, len(in_block), batch_size):
            feats = slider.features(wave, in_block[i : i + batch_size], frames, int(in_block[0]))
            out.append(scorer.classify(feats))
    return np.concatenate(out).astype(np.float32)


def smooth(probs: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` windows (odd), over the windows present at the edges."""
    if width <= 1:
        return probs
    half = width // 2
    c = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    i = np.arange(len(probs))
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(probs))
    return ((c[hi] - c[lo]) / (hi - lo)[:, None]).astype(np.float32)


def smooth_width(cfg: ListenConfig) -> int:
    """Windows in the moving average: smooth_ms / hop_ms rounded, made odd so that it is centred."""
    w = max(1, round(cfg.smooth_ms / cfg.hop_ms))
    return w if w % 2 else w + 1


def detect(
    probs: np.ndarray, classes: list[str], starts_s: np.ndarray, clip_s: float, cfg: ListenConfig, words=None
) -> list[dict]:
    """Detections from the windows' posteriors (N, K) and start times (seconds): word, start, end, time
    (seconds) and confidence, in time order (the module docstring says how). `words`: the classes that
    may be reported (default: every class but _silence_ and _unknown_); the others, like those two, still
    win windows and keep the words quiet. `stream eval` calls `decide` on the smoothed posteriors once
    per threshold: the same code."""
    threshold = DEFAULT_THRESHOLD if cfg.threshold is None else cfg.threshold  # listen resolves it before
    scores = smooth(probs, smooth_width(cfg))
    return decide(scores, classes, starts_s, clip_s, threshold, cfg.refractory_ms, words, cfg.min_windows)


def reported_mask(classes: list[str], words=None) -> np.ndarray:
    """(K,) bool: the classes a detection may name."""
    return np.array([c not in NOT_REPORTED and (words is None or c in words) for c in classes])


def decide(
    scores: np.ndarray,
    classes: list[str],
    starts_s: np.ndarray,
    clip_s: float,
    threshold: float,
    refractory_ms: float,
    words=None,
    min_windows: int = 1,
) -> list[dict]:
    """`detect` after the smoothing: scores (N, K) smoothed posteriors -> detections; a run of fewer than
    `min_windows` windows is none (the consecutive-window rule)."""
    top = scores.argmax(axis=1)
    best = scores[np.arange(len(top)), top]
    active = reported_mask(classes, words)[top] & (best > threshold)
    # runs of consecutive active windows with the same top class: (class, first, last window)
    same_prev = np.zeros(len(top), bool)
    same_prev[1:] = active[:-1] & active[1:] & (top[1:] == top[:-1])  # window i continues window i-1's run
    same_next = np.zeros(len(top), bool)
    same_next[:-1] = same_prev[1:]
    firsts, lasts = np.flatnonzero(active & ~same_prev), np.flatnonzero(active & ~same_next)
    peaks = np.maximum.reduceat(np.where(active, best, -np.inf), firsts) if len(firsts) else []
    found: list[dict] = []
    last: dict[int, dict] = {}  # word -> its latest detection
    for i, j, peak in zip(firsts.tolist(), lasts.tolist(), np.asarray(peaks).tolist()):
        if j - i + 1 < min_windows:
            continue
        k = int(top[i])
        first_end, last_start = starts_s[i] + clip_s, starts_s[j]
        det = {
            "word": classes[k],
            # a run longer than one window (the word said again within a second) has no common part:
            # then these two are the end of its first word and the start of its last
            "start": float(min(last_start, first_end)),
            "end": float(max(last_start, first_end)),
            "time": float((first_end + last_start) / 2),
            "confidence": float(peak),
        }
        prev = last.get(k)
        if prev is not None and (det["time"] - prev["time"]) * 1000 < refractory_ms:
            prev["end"] = max(prev["end"], det["end"])
            prev["confidence"] = max(prev["confidence"], det["confidence"])
            continue
        found.append(det)
        last[k] = det
    return [{**d, **{t: round(d[t], 3) for t in ("start", "end", "time")}} for d in found]


def open_checked(model: str | Path, device: str, batch_size: int) -> Scorer:
    """open_scorer, then the checks listen and stream eval make before reading any audio: a sample rate
    in range, and a batch of windows that fits the memory."""
    scorer = open_scorer(model, device)
    if not 0 < scorer.sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{model}: sample rate {scorer.sample_rate} Hz, not in 1..{MAX_SAMPLE_RATE:,}: a damaged file?"
        )
    # one batch of windows is copied out of the recording and handed to the model: refused before any
    # file is read where that alone exceeds the memory there is
    need, have = batch_size * scorer.clip_samples * 4, available_ram()
    if need > have:
        raise ValueError(
            f"{model}: a batch of {batch_size} windows of {scorer.clip_samples:,} samples needs "
            f"{need / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB of memory available; lower "
            "--batch-size, or check the model's clip length"
        )
    return scorer


def resolve_threshold(model: str | Path, scorer: Scorer, cfg: ListenConfig) -> tuple[float, str]:
    """(threshold, where it came from): the one given (--threshold), else the model's measured operating
    point (stream_results.operating_point_for: the run's streaming.json, an ONNX file's metadata), else
    DEFAULT_THRESHOLD. An operating point measured with other hop / smoothing / refractory settings than
    `cfg`'s is still taken, with a warning that its FA/h was not measured for these."""
    import warnings

    from speechcls.infer.stream_results import operating_point_for

    if cfg.threshold is not None:
        return cfg.threshold, "--threshold"
    point, source = operating_point_for(model, scorer)
    if point is None:
        return DEFAULT_THRESHOLD, "the default; no operating point measured (speechcls stream eval)"
    if point.get("listen") and point["listen"] != cfg.settings():
        warnings.warn(
            f"the operating point of {source} was measured with {point['listen']}, listen runs with "
            f"{cfg.settings()}: its FA/h does not hold for these; run stream eval with them",
            stacklevel=2,
        )
    frr = point.get("frr")
    at = f"{point['fa_per_hour']:.2g} FA/h" + (f", FRR {frr:.3f}" if frr is not None else "")
    return float(point["threshold"]), (
        f"the operating point at <= {point['target_fa_per_hour']:g} FA/h ({at} on {point.get('stream', '?')}), {source}"
    )


def listen(
    model: str | Path, files: list[Path], cfg: ListenConfig = ListenConfig(), device: str = "auto"
) -> list[dict]:
    """Detections in each file: {"file", "seconds" (of audio), "compute_s", "realtime" (seconds of audio per
    second of compute: decoding, windows, model and decisions), "threshold" and "threshold_from" (where it
    came from: resolve_threshold), "way", "detections": [...]}; a file that cannot be read gets {"file",
    "error"} and the others are still listened to."""
    from dataclasses import replace

    from speechcls.audio.decode import BadAudio, read_at

    cfg.validate()
    scorer = open_checked(model, device, cfg.batch_size)
    threshold, source = resolve_threshold(model, scorer, cfg)
    cfg = replace(cfg, threshold=threshold)
    hop = max(1, round(cfg.hop_ms * scorer.sample_rate / 1000))
    way, _ = choose_way(scorer, hop, cfg.way)
    out = []
    for f in files:
        t0 = time.perf_counter()
        try:
            audio, _ = read_at(Path(f), scorer.sample_rate)
        except BadAudio as e:
            out.append({"file": str(f), "error": f"not readable audio: {e}"})
            continue
        except OSError as e:
            out.append({"file": str(f), "error": str(e)})
            continue
        starts, probs = posteriors(audio, scorer, hop, cfg.batch_size, way)
        if not np.isfinite(probs).all():
            out.append(
                {"file": str(f), "error": "the model's posteriors are not finite (a float file out of [-1, 1]?)"}
            )
            continue
        found = detect(
            probs, scorer.classes, starts / scorer.sample_rate, scorer.clip_samples / scorer.sample_rate, cfg
        )
        seconds = len(audio) / scorer.sample_rate
        compute = time.perf_counter() - t0
        out.append({
            "file": str(f), "seconds": seconds, "windows": len(starts), "compute_s": compute,
            "realtime": seconds / max(compute, 1e-9), "threshold": threshold, "threshold_from": source, "way": way,
            "detections": found,
        })  # fmt: skip
    return out
