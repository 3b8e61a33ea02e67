"""The chapter's figures from the command line (matplotlib, Agg backend: no display needed).

Each function writes one file whose format follows its suffix (.png, .svg, .pdf) and returns its path.
Figure numbers refer to the chapter: wave 22.1, dft 22.2, spectrogram 22.3, melbank 22.7,
mel-vs-fourier 22.8, lr 22.4/22.9/22.12, curves 22.5/22.10/22.13, confusion 22.6/22.11/22.14. The DET curve
of stream evaluation, no figure of the chapter, is in report/det.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speechcls import config
from speechcls.config import FeatureParams

FIGSIZE = (9, 5.5)  # inches at DPI: 900 x 550 pixels, above the 640 x 480 a figure needs to be legible
DPI = 100
TICK_PT = 8  # class names: readable at 100 % zoom (7 pt was not)
CORRECT, WRONG = "#d1d1d1", "#7a7a7a"  # the alluvial's two greys, as in the chapter's figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


FORMATS = (".png", ".svg", ".pdf")
# in every figure's metadata (PNG text chunk, SVG dc:creator, PDF Creator): how a rerun knows a figure
# speechcls drew, which a figure command may redraw without --overwrite
MARK = "speechcls figure"


def check_out(out: Path, reads: tuple = (), overwrite: bool = False, command: str = "plot") -> Path:
    """A figure's --out, before any work: a .png, .svg or .pdf name, and runtime.check_out's rule (an
    existing file is replaced only where speechcls drew it, or with `overwrite`)."""
    from speechcls import runtime

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: use a .png, .svg or .pdf file name")
    return runtime.check_out(out, reads=reads, own=runtime.marked(MARK.encode()), overwrite=overwrite, command=command)


def save(fig, out: Path) -> Path:
    """The figure to `out` (format by its suffix), atomically, carrying MARK."""
    from speechcls.runtime import atomic_write

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {out}: use a .png, .svg or .pdf file name")
    fmt = out.suffix.lower()[1:]
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=DPI, format=fmt, metadata={"Creator": MARK}))
    finally:
        _plt().close(fig)
    return out


def _clip(path: Path, pad: bool = True) -> np.ndarray:
    """The clip as featurize sees it: mono float32 at 16 kHz (padded / truncated to one second)."""
    from speechcls.audio.decode import BadAudio, fit_length, read_at

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        audio, _ = read_at(path, config.SAMPLE_RATE)
    except BadAudio as e:
        raise ValueError(f"{path}: not readable audio ({e})") from e
    return fit_length(audio, config.CLIP_SAMPLES) if pad else audio


def _features(wave: np.ndarray, variant: str, power: float | None = None):
    import torch

    from speechcls.audio.features import FeatureExtractor, make_transform

    params = FeatureParams(variant)
    if power is not None:  # the chapter displays sqrt magnitudes: power 0.5
        t = make_transform(params)
        t.power = power
        return t(torch.from_numpy(wave)).numpy()
    return FeatureExtractor(params)(torch.from_numpy(wave)[None])[0].numpy()


def wave(file: Path, out: Path) -> Path:
    x = _clip(file, pad=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(np.arange(len(x)) / config.SAMPLE_RATE, x, lw=0.4, color="#222222")
    ax.set(title=f"{Path(file).name}: sound wave", xlabel="time [s]", ylabel="amplitude")
    fig.tight_layout()
    return save(fig, out)


def dft(file: Path, out: Path) -> Path:
    x = _clip(file)
    mag = np.abs(np.fft.fft(x))[: len(x) // 2]
    freqs = np.arange(len(mag)) * config.SAMPLE_RATE / len(x)
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(freqs, mag, lw=0.4, color="#222222")
    ax.set(
        title=f"{Path(file).name}: discrete Fourier transform (first half)", xlabel="frequency [Hz]", ylabel="magnitude"
    )
    fig.tight_layout()
    return save(fig, out)


def spectrogram(file: Path, out: Path, variant: str = "spectrogram") -> Path:
    """Spectrogram as an image: sqrt magnitude like the chapter, log-frequency axis in Hz, time in s;
    mel: the mel power (sqrt) on mel bands; complex: real and imaginary parts in two panels."""
    if variant not in ("spectrogram", "mel", "complex"):
        raise ValueError(f"--variant {variant!r}: choose spectrogram, mel or complex")
    x = _clip(file)
    params = FeatureParams(variant)
    frames = params.shape[-1]
    t = np.arange(frames) * params.hop_length / config.SAMPLE_RATE
    plt = _plt()
    name = _clip_title(Path(file))
    if variant == "complex":
        z = _features(x, "complex")  # (2, F, T)
        freqs = np.arange(z.shape[1]) * config.SAMPLE_RATE / params.n_fft
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), sharey=True)
        lim = np.abs(z).max() ** 0.5
        for ax, part, title in zip(axes, z, ("real", "imaginary")):
            shown = np.sign(part) * np.abs(part) ** 0.5  # signed sqrt keeps the sign visible
            m = ax.pcolormesh(t, freqs[1:], shown[1:], shading="nearest", cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set(yscale="log", title=f"{title} part (signed square root)", xlabel="time [s]")
            _hz_ticks(ax, freqs[1], freqs[-1])
        axes[0].set_ylabel("frequency [Hz] (log)")
        fig.suptitle(f"{name}: complex spectrogram")
        fig.colorbar(m, ax=axes)
        return save(fig, out)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if variant == "mel":
        spec = _features(x, "mel")[0] ** 0.5
        mels = np.linspace(_hz_to_mel(0), _hz_to_mel(config.SAMPLE_RATE / 2), params.n_mels + 2)[1:-1]
        freqs = _mel_to_hz(mels)  # centre frequency of each HTK filter
        title = f"{name}: mel spectrogram, {params.n_mels} filters"
    else:
        spec = _features(x, "spectrogram", power=0.5)
        freqs = np.arange(spec.shape[0]) * config.SAMPLE_RATE / params.n_fft
        spec, freqs = spec[1:], freqs[1:]  # 0 Hz has no place on a log axis
        title = f"{name}: spectrogram, window {params.win_length}"
    m = ax.pcolormesh(t, freqs, spec, shading="nearest", cmap="gray")
    ax.set(yscale="log", title=title, xlabel="time [s]", ylabel="frequency [Hz] (log)")
    _hz_ticks(ax, freqs[0], freqs[-1])
    fig.colorbar(m, ax=ax, label="magnitude (square root)")
    fig.tight_layout()
    return save(fig, out)


def _clip_title(path: Path) -> str:
    """`"bed" (bed/0a7c2a8d_nohash_0.wav)` when the clip's folder is a class folder (its parent holds a
    tree's list files, or it is one of v0.01's words), else the file name."""
    word, tree = path.parent.name, path.parent.parent
    listed = any((tree / name).is_file() for name in ("validation_list.txt", "testing_list.txt"))
    if word and not word.startswith("_") and (listed or word in config.V001_WORDS):
        return f'"{word}" ({word}/{path.name})'
    return path.name


def _hz_ticks(ax, lo: float, hi: float) -> None:
    """1-2-5 ticks (and 8k, the Nyquist frequency at 16 kHz) in plain Hz on a log frequency axis:
    matplotlib's default log ticks are decades only (100, 1000, 10000), too few to read a formant off."""
    from matplotlib.ticker import NullLocator

    ticks = [t for t in sorted({m * 10**e for e in range(1, 5) for m in (1, 2, 5)} | {8000}) if lo <= t <= hi]
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticks(ticks, [f"{t / 1000:g}k" if t >= 1000 else f"{t:g}" for t in ticks])


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # HTK, as torchaudio's default


def _mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


def melbank(out: Path, n_mels: int = 16) -> Path:
    import torchaudio

    if not 1 <= n_mels <= 257:
        raise ValueError(f"--n-mels {n_mels}: choose 1 to 257")
    fb = torchaudio.functional.melscale_fbanks(257, 0.0, config.SAMPLE_RATE / 2, n_mels, config.SAMPLE_RATE).numpy()
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for j in range(n_mels):
        ax.plot(np.arange(1, 258), fb[:, j], lw=1)
    ax.set(
        title=f"Mel filter bank: {n_mels} filters over 257 Fourier coefficients",
        xlabel="Fourier coefficient",
        ylabel="contribution to mel coefficient",
    )
    fig.tight_layout()
    return save(fig, out)


def mel_vs_fourier(file: Path, out: Path, frame: int = 31) -> Path:
    """One frame's Fourier coefficients (first 128) and its 128 mel coefficients, as in fig. 22.8."""
    x = _clip(file)
    spec = _features(x, "spectrogram")[0]  # (257, 101)
    if not 0 <= frame < spec.shape[1]:
        raise ValueError(f"--frame {frame}: choose 0 to {spec.shape[1] - 1}")
    mel = _features(x, "mel")[0]
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    k = np.arange(1, 129)
    ax.plot(k, spec[:128, frame], label="fourier", lw=1.2)
    ax.plot(k, mel[:, frame], label="mel", lw=1.2)
    ax.set(
        title=f"{Path(file).name}: frame {frame}, Fourier vs mel coefficients",
        xlabel="coefficient",
        ylabel="magnitude (power)",
    )
    ax.legend()
    fig.tight_layout()
    return save(fig, out)


def lr_figure(lrs, losses, smooth, suggestion: float):
    """Loss and smoothed loss against the LR (log axis), the suggested max LR marked: a matplotlib
    Figure for the caller to save."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    ax.plot(lrs, losses, color="#bbbbbb", lw=0.8, label="loss")
    ax.plot(lrs, smooth, color="#1f77b4", lw=1.6, label="smoothed")
    ax.axvline(suggestion, color="#d62728", ls="--", lw=1, label=f"suggested max LR {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("Learning rate finder")
    ax.legend()
    fig.tight_layout()
    return fig


def lr(source: Path, out: Path, beta: float = 0.98) -> Path:
    """lr-find's figure, redrawn from its CSV (the same smoothing and suggestion as lr-find)."""
    from speechcls.engine.lr_find import SmoothedLoss, suggest_max_lr
    from speechcls.engine.run_dir import read_lr_find

    lrs, losses = read_lr_find(source)
    if not lrs:
        raise ValueError(f"{source}: no rows")
    smoother = SmoothedLoss(beta)
    smooth = [smoother(v) for v in losses]
    return save(lr_figure(lrs, losses, smooth, suggest_max_lr(lrs, smooth)[0]), out)


def best_epoch(log: list[dict], metrics: dict | None = None) -> int | None:
    """The epoch whose checkpoint is best.pt: metrics.json's best_epoch when the run finished, else the
    validation-loss minimum of the log (the first one on a tie, as early stopping keeps it)."""
    if metrics and metrics.get("best_epoch"):
        return int(metrics["best_epoch"])
    valid = [(r["loss"], r["epoch"]) for r in log if r["set"] == "valid"]
    return min(valid, key=lambda lv: lv[0])[1] if valid else None


def curves_figure(log: list[dict], name: str, best: int | None = None):
    """Train and validation loss and accuracy per epoch, the best epoch marked by a dashed vertical
    line on both panels: a matplotlib Figure for the caller to save."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for ax, key in zip(axes, ("loss", "acc")):
        for split, style in (("train", "-o"), ("valid", "-s")):
            pts = [(r["epoch"], r[key]) for r in log if r["set"] == split]
            if pts:
                ax.plot(*zip(*pts), style, ms=3, label=split)
        if best is not None:
            ax.axvline(best, color="#d62728", ls="--", lw=1, label=f"best epoch {best}", gid="best-epoch")
        ax.set(xlabel="epoch", ylabel=key, title=f"{name}: {key}")
        ax.legend()
    return fig


def curves(run: Path, out: Path) -> Path:
    from speechcls.engine.run_dir import RunDir

    rd = RunDir(run)
    log = rd.read_log()
    metrics = rd.read_metrics() if (Path(run) / "metrics.json").is_file() else None
    return save(curves_figure(log, Path(run).name, best_epoch(log, metrics)), out)


def confusion(run: Path, out: Path, min_share: float = 0.001) -> Path:
    """Row-normalized confusion heatmap (rows = true class) and the chapter's alluvial view:
    predictions (left) flowing into targets (right); pairs rarer than `min_share` of the test set
    are hidden, as in the chapter (a thousandth)."""
    from speechcls.engine.run_dir import RunDir

    return save(confusion_figure(RunDir(run).read_metrics(), min_share), out)


def confusion_figure(metrics: dict, min_share: float = 0.001):
    """The two panels of `confusion` from a metrics.json dict: a matplotlib Figure for the caller to save."""
    conf = np.array(metrics["confusion"], dtype=float)
    classes = metrics["classes"]
    k = len(classes)
    plt = _plt()
    # constrained layout sizes the margins to the rotated class names, so the "predicted" label below
    # them stays inside the figure (tight_layout with the colorbar clipped it)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 9), gridspec_kw={"width_ratios": [1.1, 1]}, layout="constrained")
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    im = ax1.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax1.set_xticks(range(k), classes, rotation=90, fontsize=TICK_PT)
    ax1.set_yticks(range(k), classes, fontsize=TICK_PT)
    ax1.set(xlabel="predicted", ylabel="true", title=f"confusion (row-normalized), test acc {metrics['test_acc']:.3f}")
    fig.colorbar(im, ax=ax1, fraction=0.046)
    _alluvial(ax2, conf, classes, min_share)
    return fig


def _alluvial(ax, conf: np.ndarray, classes: list[str], min_share: float) -> None:
    """Bands from predicted (x=0) to target (x=1), stacked in class order on both sides; correct
    predictions light grey, errors darker, as in the chapter's figure."""
    total = conf.sum()
    shown = np.where(conf >= min_share * total, conf, 0)
    k = len(classes)
    gap = 0.004 * shown.sum()
    left_size = shown.sum(0)  # by predicted class
    right_size = shown.sum(1)  # by true class
    left_top = np.concatenate([[0], np.cumsum(left_size + gap)])[:-1]
    right_top = np.concatenate([[0], np.cumsum(right_size + gap)])[:-1]
    left_used, right_used = left_top.copy(), right_top.copy()
    s = np.linspace(0, 1, 50)
    ease = 3 * s**2 - 2 * s**3
    for p in range(k):  # predicted
        for t in range(k):  # true
            n = shown[t, p]
            if n <= 0:
                continue
            y0a, y1a = left_used[p], left_used[p] + n
            y0b, y1b = right_used[t], right_used[t] + n
            left_used[p] += n
            right_used[t] += n
            lower = y0a + (y0b - y0a) * ease
            upper = y1a + (y1b - y1a) * ease
            color = CORRECT if p == t else WRONG
            ax.fill_between(0.1 + 0.8 * s, lower, upper, color=color, alpha=0.9 if p != t else 0.8, lw=0)
    for i, c in enumerate(classes):
        for x, top, size, ha in ((0.1, left_top[i], left_size[i], "right"), (0.9, right_top[i], right_size[i], "left")):
            if size > 0:
                ax.add_patch(_rect(x - 0.01, top, 0.02, size))
                ax.text(x + (-0.02 if ha == "right" else 0.02), top + size / 2, c, ha=ha, va="center", fontsize=TICK_PT)
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(max(left_top[-1] + left_size[-1], right_top[-1] + right_size[-1]), 0)
    ax.set_xticks([0.1, 0.9], ["predicted", "target"])
    ax.set_yticks([])
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color=CORRECT, alpha=0.8, label="correct (predicted = target)"),
            Patch(color=WRONG, alpha=0.9, label="error (predicted ≠ target)"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.06),
        ncol=2,
        frameon=False,
    )
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"predictions flowing into targets (pairs under {min_share:g} of the test set hidden)")


def _rect(x, y, w, h):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, color="#333333")
