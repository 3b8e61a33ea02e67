"""The DET curve of `speechcls stream eval` (no figure of the chapter; issue 24): a keyword spotter's false
rejects against false accepts per hour, drawn with plots.py's conventions (size, backend, metadata)."""

from __future__ import annotations

import math
from pathlib import Path

from speechcls.report.plots import DPI, FIGSIZE, TICK_PT, _plt, save


def det(runs: list[Path], out: Path) -> Path:
    """The DET curve of `speechcls stream eval`: false rejects against false accepts per hour (log x), one
    curve per run (over all its keywords; with one run, one dashed curve per keyword too), the operating
    point marked. A threshold with no false accept sits at the left edge, half the stream's resolution
    (0.5 / hours), marked 0."""
    return save(det_figure(runs), out)


def det_figure(runs: list[Path]):
    """The figure of `det` (matplotlib Figure)."""
    from speechcls.infer.stream_results import read_curve, read_results

    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    floor = math.inf
    curves = []
    for run in runs:
        rows, record = read_curve(run), read_results(run) or {}
        hours = (record.get("seconds") or 3600.0) / 3600
        floor = min(floor, 0.5 / hours)
        words = sorted({r["word"] for r in rows} - {"all"}) if len(runs) == 1 else []
        for word in ["all", *words]:
            pts = sorted((r["fa_per_hour"], r["frr"]) for r in rows if r["word"] == word and not math.isnan(r["frr"]))
            curves.append((Path(run).name if word == "all" else word, word == "all", pts, record))
    if not any(pts for _, _, pts, _ in curves):
        raise ValueError(f"{', '.join(map(str, runs))}: no keyword label in the stream: there is no FRR to plot")
    for name, whole, pts, record in curves:
        xs = [max(x, floor) for x, _ in pts]
        ys = [100 * y for _, y in pts]
        ax.step(xs, ys, where="post", lw=2 if whole else 1, ls="-" if whole else "--", label=name)
        point = record.get("operating_point") if whole else None
        if point and point.get("frr") is not None:
            ax.plot([max(point["fa_per_hour"], floor)], [100 * point["frr"]], "o", ms=8, color="black")
            ax.annotate(
                f"threshold {point['threshold']:g}", (max(point["fa_per_hour"], floor), 100 * point["frr"]),
                textcoords="offset points", xytext=(8, 6),
            )  # fmt: skip
    ax.set_xscale("log")
    ax.axvline(floor, color="#999999", lw=0.8, ls=":")
    ax.text(floor, 1.01, " 0", transform=ax.get_xaxis_transform(), fontsize=TICK_PT, color="#666666")
    ax.set(xlabel="false accepts per hour (log)", ylabel="false rejects (%)", ylim=(-2, 102))
    ax.set_title("DET: false rejects against false accepts per hour (speechcls stream eval); dot: operating point")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=TICK_PT)
    return fig
