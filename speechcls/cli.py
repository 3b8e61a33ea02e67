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
