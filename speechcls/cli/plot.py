"""`speechcls plot ...` and `speechcls report`: the chapter's figures and the HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speechcls.cli.app import OutFile, OverwriteOpt, app, plot_app, user_errors

Wav = Annotated[Path, typer.Argument(metavar="FILE.wav", help="An audio file.")]
RunArg = Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A `speechcls train` run folder.")]


def _plotted(path: Path) -> None:
    typer.echo(str(path))


@plot_app.command("wave")
@user_errors
def plot_wave(file: Wav, out: OutFile = Path("wave.png"), overwrite: OverwriteOpt = False) -> None:
    """The sound wave (fig. 22.1)."""
    from speechcls.report import plots

    plots.check_out(out, (file,), overwrite)
    _plotted(plots.wave(file, out))


@plot_app.command("dft")
@user_errors
def plot_dft(file: Wav, out: OutFile = Path("dft.png"), overwrite: OverwriteOpt = False) -> None:
    """Magnitude of the discrete Fourier transform, first half (fig. 22.2)."""
    from speechcls.report import plots

    plots.check_out(out, (file,), overwrite)
    _plotted(plots.dft(file, out))


@plot_app.command("spectrogram")
@user_errors
def plot_spectrogram(
    file: Wav,
    out: OutFile = Path("spectrogram.png"),
    variant: Annotated[str, typer.Option(help="spectrogram | mel | complex (two panels).")] = "spectrogram",
    overwrite: OverwriteOpt = False,
) -> None:
    """The spectrogram as an image: log-frequency axis, time in seconds, sqrt magnitude (fig. 22.3)."""
    from speechcls.report import plots

    plots.check_out(out, (file,), overwrite)
    _plotted(plots.spectrogram(file, out, variant))


@plot_app.command("melbank")
@user_errors
def plot_melbank(
    out: OutFile = Path("melbank.png"),
    n_mels: Annotated[int, typer.Option(help="Filters to draw.")] = 16,
    overwrite: OverwriteOpt = False,
) -> None:
    """The mel filter bank's triangles over the Fourier bins (fig. 22.7)."""
    from speechcls.report import plots

    plots.check_out(out, (), overwrite)
    _plotted(plots.melbank(out, n_mels))


@plot_app.command("mel-vs-fourier")
@user_errors
def plot_mel_vs_fourier(
    file: Wav,
    out: OutFile = Path("mel_vs_fourier.png"),
    frame: Annotated[int, typer.Option(help="Frame (time window) to show.")] = 31,
    overwrite: OverwriteOpt = False,
) -> None:
    """One frame's Fourier and mel coefficients together (fig. 22.8)."""
    from speechcls.report import plots

    plots.check_out(out, (file,), overwrite)
    _plotted(plots.mel_vs_fourier(file, out, frame))


@plot_app.command("lr")
@user_errors
def plot_lr(
    source: Annotated[Path, typer.Argument(metavar="DIR|CSV", help="lr-find's folder or its lr_find.csv.")],
    out: OutFile = Path("lr_find.png"),
    overwrite: OverwriteOpt = False,
) -> None:
    """Loss against learning rate from lr-find (figs. 22.4, 22.9, 22.12)."""
    from speechcls.report import plots

    plots.check_out(out, (source, Path(source) / "lr_find.csv"), overwrite)
    _plotted(plots.lr(source, out))


@plot_app.command("curves")
@user_errors
def plot_curves(run: RunArg, out: OutFile = Path("curves.png"), overwrite: OverwriteOpt = False) -> None:
    """Train and valid loss and accuracy per epoch (figs. 22.5, 22.10, 22.13)."""
    from speechcls.report import plots

    plots.check_out(out, (), overwrite)
    _plotted(plots.curves(run, out))


@plot_app.command("confusion")
@user_errors
def plot_confusion(
    run: RunArg,
    out: OutFile = Path("confusion.png"),
    min_share: Annotated[float, typer.Option(help="Hide pairs rarer than this share of the test set.")] = 0.001,
    overwrite: OverwriteOpt = False,
) -> None:
    """Confusion matrix heatmap and the alluvial view of predictions into targets (figs. 22.6, 22.11, 22.14)."""
    from speechcls.report import plots

    plots.check_out(out, (), overwrite)
    _plotted(plots.confusion(run, out, min_share))


@plot_app.command("det")
@user_errors
def plot_det(
    runs: Annotated[
        list[Path], typer.Argument(metavar="RUN...", help="Runs (or .onnx files) judged by `speechcls stream eval`.")
    ],
    out: OutFile = Path("det.png"),
    overwrite: OverwriteOpt = False,
) -> None:
    """False rejects against false accepts per hour (log x) from streaming.csv: one curve per run (per keyword
    too, for one run), the operating point marked."""
    from speechcls.infer.stream_results import result_paths
    from speechcls.report import det, plots

    plots.check_out(out, tuple(p for r in runs for p in result_paths(r).values()), overwrite)
    _plotted(det.det(runs, out))


@app.command()
@user_errors
def report(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run folders to compare.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("report.html"),
    overwrite: OverwriteOpt = False,
) -> None:
    """One self-contained HTML page comparing runs: the chapter's table, curves, confusion, per-class accuracy."""
    from speechcls.report.html import check_out, html_report

    check_out(out, runs, overwrite)
    typer.echo(str(html_report(runs, out)))
