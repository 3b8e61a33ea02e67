"""The typer app every command module registers on, and what they share: the console, the error
wrapper, the common options. torch, torchaudio and DALI are imported inside commands (through the
library modules), never here, so that `speechcls --help` answers at once."""

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


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def user_errors(fn):
    """Turn the errors a user can cause into one red line and exit status 1, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from speechcls.data.download import DownloadError

        try:
            return fn(*args, **kwargs)
        except (ValueError, DownloadError, FileNotFoundError, PermissionError) as e:
            console(stderr=True).print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
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
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
StoreOpt = Annotated[
    Optional[str],
    typer.Option(help="Feature store, a folder or an fsspec URL [default: the one complete store under the cache]."),
]
VariantOpt = Annotated[Optional[str], typer.Option(help="Narrow the store search to this variant.")]
OutFile = Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .svg or .pdf.")]


def check_version(version: str) -> str:
    if version not in config.RELEASES:
        raise typer.BadParameter(f"{version!r}: choose one of {', '.join(config.RELEASES)}", param_hint="--version")
    return version
