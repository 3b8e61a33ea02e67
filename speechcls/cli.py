"""The `speechcls` command line. Each command parses, calls one library function, prints.

torch, torchaudio and DALI are imported inside commands (through the library modules), never here, so
that `speechcls --help` answers at once.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls import __version__, config

app = typer.Typer(
    help="Train spoken-word classifiers on Speech Commands: download or synthesize data, featurize into "
    "a Zarr cache, train, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Look at a Speech Commands tree.", no_args_is_help=True)
app.add_typer(data_app, name="data")
plot_app = typer.Typer(help="The chapter's figures as PNG, SVG or PDF (by the --out suffix).", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def user_errors(fn):
    """Turn the errors a user can cause into one red line and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from speechcls.download import DownloadError

        try:
            return fn(*args, **kwargs)
        except (ValueError, DownloadError, FileNotFoundError, PermissionError) as e:
            _console(stderr=True).print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"speechcls {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """speechcls: spoken-word classifiers on Google's Speech Commands, fast and exact about features."""


VersionOpt = Annotated[str, typer.Option("--version", "-v", help="Speech Commands release: v0.01 or v0.02.")]


def _check_version(version: str) -> str:
    if version not in config.RELEASES:
        raise typer.BadParameter(f"{version!r}: choose one of {', '.join(config.RELEASES)}", param_hint="--version")
    return version


@app.command()
@user_errors
def download(
    version: VersionOpt = config.DEFAULT_VERSION,
    root: Annotated[
        Optional[Path],
        typer.Option(help="Folder the tree is extracted to [default: $SPEECHCLS_DATA or data/, + speech_commands_<version>]."),
    ] = None,
    url: Annotated[Optional[str], typer.Option(help="Fetch from this address instead (a mirror).")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected SHA-256 of the archive at --url.")] = None,
    remove_archive: Annotated[bool, typer.Option(help="Delete the .tar.gz once extracted.")] = False,
) -> None:
    """Download, verify (SHA-256) and extract a Speech Commands release; resumes a partial download."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from speechcls import download as dl

    _check_version(version)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=_console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("download", total=None, visible=False)
        hooks = dl.Progress(
            start=lambda total, done: bar.update(task, total=total, completed=done, visible=True),
            advance=lambda n: bar.advance(task, n),
        )
        tree, what = dl.download_release(version, root, url, sha256, hooks)
    if remove_archive:
        dl.remove_archive(tree)
    typer.echo(f"{tree}: {'already extracted' if what == 'present' else 'downloaded, verified and extracted'}")


@app.command()
@user_errors
def synth(
    out: Annotated[
        Optional[Path], typer.Option(help="Tree to write [default: $SPEECHCLS_DATA or data/, + synth_commands].")
    ] = None,
    words: Annotated[
        Optional[list[str]],
        typer.Option("--words", "-w", help="Words to speak (repeat, or comma-separated) [default: the 30 of v0.01]."),
    ] = None,
    voices: Annotated[int, typer.Option(help="Speakers; each says every word once.", min=3)] = config.SYNTH_VOICES,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    noise: Annotated[
        float, typer.Option(help="Background noise amplitude relative to the speech peak (0 = clean).", min=0.0)
    ] = config.SYNTH_NOISE,
    overwrite: Annotated[bool, typer.Option(help="Replace a different tree already at --out.")] = False,
) -> None:
    """Write a Speech Commands-style tree spoken by espeak-ng: offline demo and test data."""
    from rich.progress import Progress

    from speechcls import synth as sy

    word_list = tuple(w for item in (words or ()) for w in item.split(",")) or config.V001_WORDS
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("synth", total=voices * len(set(word_list)))
        tree, what = sy.synthesize(
            out, word_list, voices, seed, noise, overwrite, on_clip=lambda: bar.advance(task)
        )
    if what == "present":
        typer.echo(f"{tree}: already written with these parameters")
    else:
        typer.echo(f"{tree}: {voices} voices x {len(set(word_list))} words = {voices * len(set(word_list))} clips")


@app.command()
@user_errors
def featurize(
    variant: Annotated[str, typer.Option(help="spectrogram | mel | complex | waveform.")] = "spectrogram",
    root: Annotated[
        Optional[Path],
        typer.Option(help="The tree [default: data/speech_commands_<version>, downloaded if absent]."),
    ] = None,
    version: VersionOpt = config.DEFAULT_VERSION,
    out: Annotated[
        Optional[str],
        typer.Option(help="Store to write: a folder or an fsspec URL (s3://...) [default: cache/<dataset>/<variant>-<hash>.zarr]."),
    ] = None,
    backend: Annotated[str, typer.Option(help="auto | torch | dali (DALI: spectrogram and mel on CPU).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Clips per batched feature call.", min=1)] = config.BATCH_SIZE,
    dtype: Annotated[str, typer.Option(help="float32 | float16 (waveform is always int16).")] = "float32",
    n_fft: Annotated[int, typer.Option(help="FFT size.")] = 512,
    win_length: Annotated[int, typer.Option(help="Window length in samples (0.03 s).")] = 480,
    hop_length: Annotated[int, typer.Option(help="Hop length in samples (0.01 s).")] = 160,
    n_mels: Annotated[int, typer.Option(help="Mel filters (mel only).")] = 128,
    f_min: Annotated[float, typer.Option(help="Lowest frequency (Hz) of the mel filters.")] = 0.0,
    f_max: Annotated[Optional[float], typer.Option(help="Highest frequency (Hz) [default: sample rate / 2].")] = None,
    normalized: Annotated[bool, typer.Option(help="Divide by the window's norm, as the chapter does.")] = True,
    chunk_rows: Annotated[Optional[int], typer.Option(help="Rows per Zarr chunk [default: ~16 MB].", min=1)] = None,
    codec: Annotated[str, typer.Option(help="none | zstd-<level> | blosc-<cname>-<level>-<shuffle>.")] = "",
    overwrite: Annotated[bool, typer.Option(help="Replace a store made with other settings.")] = False,
) -> None:
    """Turn every clip into features in batched device passes and store them in a chunked Zarr cache."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from speechcls import store
    from speechcls.featurize import featurize as run

    _check_version(version)
    params = config.FeatureParams(
        variant=variant, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels,
        f_min=f_min, f_max=f_max, normalized=normalized, dtype=dtype,
    ).validate()  # fmt: skip
    from speechcls import dist

    main = dist.from_env().main  # under torchrun, rank 0 alone shows progress and the summary
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} clips/s"), TimeRemainingColumn(), console=_console(stderr=True),
        transient=True, disable=not main,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"featurize {variant}", total=None, rate="-")
        state = {}

        def on_start(total, done):
            import time

            state.update(t=time.perf_counter(), done=0)
            bar.update(task, total=total, completed=done)

        def on_block(n):
            import time

            state["done"] += n
            rate = state["done"] / max(time.perf_counter() - state["t"], 1e-9)
            bar.update(task, advance=n, rate=f"{rate:,.0f}")

        result = run(
            params, root, version, out, backend, device, batch_size, chunk_rows, codec or store.DEFAULT_CODEC,
            overwrite, on_start=on_start, on_block=on_block,
        )  # fmt: skip
    if not main:
        return
    err = _console(stderr=True)
    for rel, reason in sorted(result.skipped.items())[:20]:
        err.print(f"skipped {rel}: {reason}", markup=False)
    if len(result.skipped) > 20:
        err.print(f"... {len(result.skipped) - 20} more skipped (all listed in the store's attrs)")
    typer.echo(result.line())


@app.command()
@user_errors
def info(stores: Annotated[list[str], typer.Argument(metavar="STORE...", help="Feature stores (.zarr folders or URLs).")]) -> None:
    """Variant, shape, dtype, chunks, codec, size on disk, ratio, classes, counts per split, skipped files."""
    from speechcls import report, store

    for path in stores:
        report.print_store(store.store_info(path), _console())


StoreOpt = Annotated[
    Optional[str], typer.Option(help="Feature store, a folder or an fsspec URL [default: the one complete store under the cache].")
]
VariantOpt = Annotated[Optional[str], typer.Option(help="Narrow the store search to this variant.")]


def _train_config(**kw) -> "config.TrainConfig":
    kw["store"] = str(kw["store"]) if kw.get("store") else ""
    return config.TrainConfig(**kw).validate()


@app.command()
@user_errors
def train(
    store: StoreOpt = None,
    variant: VariantOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder [default: runs/<store>-<time>].")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this folder.")] = None,
    features: Annotated[str, typer.Option(help="For a waveform store: the variant computed on the device.")] = "",
    split: Annotated[str, typer.Option(help="official (speaker-disjoint lists) | random (60/20/20).")] = "official",
    split_seed: Annotated[int, typer.Option(help="Seed of the random split.")] = config.SPLIT_SEED,
    epochs: Annotated[int, typer.Option(help="Maximum epochs (the one-cycle schedule spans them).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Examples per batch (per process under torchrun).")] = 128,
    max_lr: Annotated[float, typer.Option(help="Peak of the one-cycle learning rate.")] = 1e-2,
    patience: Annotated[int, typer.Option(help="Epochs without a lower validation loss before stopping.")] = 3,
    min_epochs: Annotated[int, typer.Option(help="Early stopping does not count before this epoch.")] = 0,
    seed: Annotated[int, typer.Option(help="Model init, dropout and batch order.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (CUDA autocast).")] = "fp32",
    channels_last: Annotated[bool, typer.Option(help="channels_last memory format.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    loader: Annotated[str, typer.Option(help="auto | device | host | stream.")] = "auto",
    workers: Annotated[int, typer.Option(help="Reader threads of the streaming loader.")] = 1,
    sync_bn: Annotated[bool, typer.Option("--sync-bn", help="Under torchrun: BatchNorm over the global batch.")] = False,
) -> None:
    """Train the chapter's CNN on a feature store: Adam, one-cycle LR, early stopping; then test.
    Under `torchrun --nproc-per-node N -m speechcls train ...` it trains with DistributedDataParallel."""
    from speechcls import dist
    from speechcls import train as tr

    cfg = _train_config(
        store=store, features=features, split=split, split_seed=split_seed, epochs=epochs, batch_size=batch_size,
        max_lr=max_lr, patience=patience, min_epochs=min_epochs, seed=seed, device=device, precision=precision,
        channels_last=channels_last, compile=compile, loader=loader, workers=workers, sync_bn=sync_bn,
    )  # fmt: skip
    if resume is not None:
        run_dir = resume
    else:
        from speechcls.loader import find_store

        run_dir = out or tr.default_run_dir(cfg.store or find_store(variant))
    if not dist.from_env().main:  # rank 0 alone shows progress, writes the run folder and reports
        tr.fit(cfg, run_dir, variant, resume is not None)
        return
    metrics = _fit_with_progress(tr, cfg, run_dir, variant, resume is not None)
    typer.echo(
        f"{run_dir}: test loss {metrics['test_loss']:.4f} acc {metrics['test_acc']:.4f} after {metrics['epochs_run']} "
        f"epochs (best {metrics['best_epoch']}), {metrics['train_samples_per_s']:.0f} train samples/s, "
        f"{metrics['loader_mode']} loader on {metrics['device']}"
    )


def _fit_with_progress(tr, cfg, run_dir, variant, resume):
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = _console(stderr=True)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        state = {}

        def epoch_start(epoch, batches):
            state.update(task=bar.add_task(f"epoch {epoch}", total=batches, stats=""), t=time.perf_counter(), n=0)

        def batch(n, loss, acc):
            state["n"] += n
            rate = state["n"] / max(time.perf_counter() - state["t"], 1e-9)
            stats = f"{rate:,.0f} samples/s" + ("" if loss != loss else f"  loss {loss:.4f} acc {acc:.4f}")
            bar.update(state["task"], advance=1, **({"stats": stats} if loss == loss or state["n"] == n else {}))

        def epoch_end(row):
            bar.remove_task(state["task"])
            t, v = row["train"], row["valid"]
            console.print(
                f"epoch {t['epoch']}: train loss {t['loss']:.4f} acc {t['acc']:.4f} | valid loss {v['loss']:.4f} "
                f"acc {v['acc']:.4f} | {row['samples_per_s']:,.0f} samples/s" + ("  *best" if row["best"] else "")
            )

        return tr.fit(cfg, run_dir, variant, resume, tr.Hooks(epoch_start, batch, epoch_end))


@app.command("lr-find")
@user_errors
def lr_find(
    store: StoreOpt = None,
    variant: VariantOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for lr_find.csv and lr_find.png.")] = Path("runs/lr_find"),
    features: Annotated[str, typer.Option(help="For a waveform store: the variant computed on the device.")] = "",
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 128,
    steps: Annotated[int, typer.Option(help="Steps of the sweep at most.")] = 100,
    start_lr: Annotated[float, typer.Option(help="First learning rate.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Last learning rate.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Model init and batch order.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Learning-rate range test: loss against an exponentially growing LR; suggests a max LR."""
    from speechcls import train as tr

    if not 0 < start_lr < end_lr:
        raise typer.BadParameter(f"need 0 < --start-lr < --end-lr, got {start_lr}, {end_lr}")
    if steps < 2:
        raise typer.BadParameter(f"--steps must be at least 2, got {steps}")
    cfg = _train_config(store=store, features=features, batch_size=batch_size, seed=seed, device=device)
    r = tr.lr_find(cfg, out, variant, start_lr, end_lr, steps)
    typer.echo(
        f"{out}/lr_find.csv, lr_find.png: {len(r['lr'])} steps; lowest smoothed loss at lr {r['min_loss_lr']:.3g}; "
        f"suggested max LR {r['suggested_max_lr']:.3g}"
    )


@app.command()
@user_errors
def evaluate(
    run: Annotated[Path, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="A run folder (best.pt) or a .pt file.")],
    split: Annotated[str, typer.Option(help="test | validation | train.")] = "test",
    store: StoreOpt = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Loss, accuracy, per-class accuracy, confusion matrix (CSV) and the most-confused pairs."""
    from speechcls import report
    from speechcls import train as tr

    r = tr.evaluate(run, split, str(store) if store else None, device)
    folder = run if run.is_dir() else run.parent
    csv_path = folder / f"confusion_{split}.csv"
    tr.write_confusion(csv_path, r["confusion"], r["classes"])
    report.print_evaluation(r, _console())
    typer.echo(f"confusion matrix: {csv_path}")


@app.command()
@user_errors
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A run folder (best.pt) or a .pt file.")],
    files: Annotated[list[Path], typer.Argument(metavar="FILE.wav...", help="Audio files to classify.")],
    top: Annotated[int, typer.Option(help="Labels per file.", min=1)] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Classify audio files with a trained checkpoint (the features it was trained on)."""
    import json

    from speechcls import train as tr

    results = tr.predict(checkpoint, files, top, device)
    if json_out:
        typer.echo(json.dumps(results, indent=1))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['file']}: error: {r['error']}", err=True)
            else:
                typer.echo(f"{r['file']}: " + ", ".join(f"{t['label']} {t['prob']:.3f}" for t in r["top"]))
    if any("error" in r for r in results):
        raise typer.Exit(1 if all("error" in r for r in results) else 0)


@app.command()
@user_errors
def bench(
    which: Annotated[
        Optional[list[str]], typer.Argument(help="featurize | input | train | store | ranks | all [default: all].")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Bounded work: one repeat, few steps (what the tests run).")] = False,
    root: Annotated[Optional[Path], typer.Option(help="A Speech Commands tree [default: a synthetic one].")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results folder [default: benchmarks/results].")] = None,
) -> None:
    """Benchmarks: the on-the-fly peer and speechcls side by side, ratios printed last."""
    from rich.table import Table

    from speechcls import bench as b

    names = list(b.SCRIPTS) if not which or "all" in which else which
    files = b.run(names, quick, root, out)
    table = Table(title="speechcls bench", title_justify="left")
    for col in ("benchmark", "variant", "way", "result"):
        table.add_column(col)
    for row in b.summary(files):
        table.add_row(*row)
    _console().print(table)


OutFile = Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .svg or .pdf.")]
Wav = Annotated[Path, typer.Argument(metavar="FILE.wav", help="An audio file.")]
RunDir = Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A `speechcls train` run folder.")]


def _plotted(path: Path) -> None:
    typer.echo(str(path))


@plot_app.command("wave")
@user_errors
def plot_wave(file: Wav, out: OutFile = Path("wave.png")) -> None:
    """The sound wave (fig. 22.1)."""
    from speechcls import plots

    _plotted(plots.wave(file, out))


@plot_app.command("dft")
@user_errors
def plot_dft(file: Wav, out: OutFile = Path("dft.png")) -> None:
    """Magnitude of the discrete Fourier transform, first half (fig. 22.2)."""
    from speechcls import plots

    _plotted(plots.dft(file, out))


@plot_app.command("spectrogram")
@user_errors
def plot_spectrogram(
    file: Wav,
    out: OutFile = Path("spectrogram.png"),
    variant: Annotated[str, typer.Option(help="spectrogram | mel | complex (two panels).")] = "spectrogram",
) -> None:
    """The spectrogram as an image: log-frequency axis, time in seconds, sqrt magnitude (fig. 22.3)."""
    from speechcls import plots

    _plotted(plots.spectrogram(file, out, variant))


@plot_app.command("melbank")
@user_errors
def plot_melbank(
    out: OutFile = Path("melbank.png"),
    n_mels: Annotated[int, typer.Option(help="Filters to draw.")] = 16,
) -> None:
    """The mel filter bank's triangles over the Fourier bins (fig. 22.7)."""
    from speechcls import plots

    _plotted(plots.melbank(out, n_mels))


@plot_app.command("mel-vs-fourier")
@user_errors
def plot_mel_vs_fourier(
    file: Wav,
    out: OutFile = Path("mel_vs_fourier.png"),
    frame: Annotated[int, typer.Option(help="Frame (time window) to show.")] = 31,
) -> None:
    """One frame's Fourier and mel coefficients together (fig. 22.8)."""
    from speechcls import plots

    _plotted(plots.mel_vs_fourier(file, out, frame))


@plot_app.command("lr")
@user_errors
def plot_lr(
    source: Annotated[Path, typer.Argument(metavar="DIR|CSV", help="lr-find's folder or its lr_find.csv.")],
    out: OutFile = Path("lr_find.png"),
) -> None:
    """Loss against learning rate from lr-find (figs. 22.4, 22.9, 22.12)."""
    from speechcls import plots

    _plotted(plots.lr(source, out))


@plot_app.command("curves")
@user_errors
def plot_curves(run: RunDir, out: OutFile = Path("curves.png")) -> None:
    """Train and valid loss and accuracy per epoch (figs. 22.5, 22.10, 22.13)."""
    from speechcls import plots

    _plotted(plots.curves(run, out))


@plot_app.command("confusion")
@user_errors
def plot_confusion(
    run: RunDir,
    out: OutFile = Path("confusion.png"),
    min_share: Annotated[float, typer.Option(help="Hide pairs rarer than this share of the test set.")] = 0.001,
) -> None:
    """Confusion matrix heatmap and the alluvial view of predictions into targets (figs. 22.6, 22.11, 22.14)."""
    from speechcls import plots

    _plotted(plots.confusion(run, out, min_share))


@app.command()
@user_errors
def report(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run folders to compare.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write.")] = Path("report.html"),
) -> None:
    """One self-contained HTML page comparing runs: the chapter's table, curves, confusion, per-class accuracy."""
    from speechcls import report as rp

    typer.echo(str(rp.html_report(runs, out)))


@data_app.command("info")
@user_errors
def data_info(
    root: Annotated[
        Optional[Path], typer.Option(help="The tree [default: $SPEECHCLS_DATA or data/, + speech_commands_v0.01].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random 60/20/20 split shown beside the official one.")] = config.SPLIT_SEED,
    check_audio: Annotated[bool, typer.Option(help="Read every file's header (finds unreadable files).")] = True,
) -> None:
    """Classes, clips per class and split, speakers, missing list entries and unreadable files."""
    from speechcls import dataset, decode, report

    index = dataset.index_tree(root if root is not None else config.default_root())
    survey = decode.survey(index.root, index.paths) if check_audio else None
    report.print_index(index, seed, survey, _console())


if __name__ == "__main__":  # pragma: no cover
    app()
