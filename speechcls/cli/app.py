"""The typer app every command module registers on, and what they share: the console, the error
wrapper, the common options. torch, torchaudio and DALI are imported inside commands (through the
library modules), never here, so that `speechcls --help` answers at once."""

from __future__ import annotations

import errno
import functools
import os
import traceback
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls import __version__, config

# `--help` lists the commands in the order of the workflow, not of the modules' import
WORKFLOW_ORDER = (
    "download", "synth", "data", "featurize", "info", "verify", "train", "lr-find", "evaluate", "predict",
    "export", "listen", "stream", "plot", "report", "bench",
)  # fmt: skip


def _reflow(text: str | None) -> str | None:
    """A docstring's paragraphs as one line each, so that rich wraps them at the terminal's width instead
    of breaking at the source's line ends; a line that starts a list item (`- `, `* `) keeps its break, and
    a paragraph that starts with click's no-rewrap mark `\\b` is kept as written."""
    if not text:
        return text
    paragraphs = []
    for para in text.strip().split("\n\n"):
        if para.lstrip().startswith("\b"):
            paragraphs.append(para)
            continue
        out: list[str] = []
        for ln in (ln.strip() for ln in para.splitlines() if ln.strip()):
            if out and not ln.startswith(("- ", "* ")):
                out[-1] += " " + ln
            else:
                out.append(ln)
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


class WorkflowGroup(typer.core.TyperGroup):
    """The top-level group: commands in WORKFLOW_ORDER (others after, as registered), and every command's
    help reflowed (see _reflow)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stack = list(self.commands.values())
        while stack:
            cmd = stack.pop()
            cmd.help, cmd.short_help = _reflow(cmd.help), _reflow(cmd.short_help)
            stack.extend(getattr(cmd, "commands", {}).values())

    def list_commands(self, ctx) -> list[str]:
        rank = {name: i for i, name in enumerate(WORKFLOW_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda n: rank.get(n, len(rank)))  # stable: others as registered


app = typer.Typer(
    cls=WorkflowGroup,
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


def _flag_shows_no_type(display_type_rich):
    """typer 0.29 writes a `<bool>` type placeholder beside every flag (--help included), though a flag
    takes no value: leave the type column of flags empty."""

    @functools.wraps(display_type_rich)
    def wrapper(self, ctx):
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)

    return wrapper


if hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flag_shows_no_type(typer.core.TyperOption.display_type_rich)


def console(stderr: bool = False):
    """The rich console of the commands. Off a terminal (CI, nohup, a pipe) rich would assume 80 columns
    and wrap longer lines into a log; there, lines are never wrapped and tables get room.

    It reads no markup and no emoji codes: every string printed through it, a table cell or a title, is
    shown as it is, so a path, a class name or any text from a file that holds `[red]`, `[/]` or `:smile:`
    is printed literally (rich would drop it, style by it, or fail on an unmatched `[/]`). Styles are given
    as rich Text objects (`Text.assemble(("error:", "bold red"), " ", line)`), never as markup."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    if not out.is_terminal:
        out.soft_wrap, out.width = True, max(out.width, 200)
    return out


# errno -> what to do; the message already names the file and says what went wrong
_OS_HINTS = {
    errno.EROFS: "choose another --out (or another place to write)",
    errno.ENOSPC: "the disk is full; free some space or choose another --out",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another --out",
    errno.EACCES: "check the permissions, or choose another path",
    errno.EPERM: "check the permissions, or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder where a file is expected; choose another path",
    errno.ENOENT: "check the path",
    errno.EEXIST: "something else is already there; remove it or choose another path",
    errno.ELOOP: "the path goes through a symbolic link loop; fix or remove the link",
}
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_state = {"debug": False}  # set by the app callback from --debug (typer's documented way to share an option)
_SEE_MORE = "run again with --debug (or SPEECHCLS_DEBUG=1) to see the traceback"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _os_error_line(e: OSError) -> str:
    """`cannot write /ro/run/config.json: Read-only file system; choose another --out`."""
    if e.filename is None:  # a socket, a pipe, or a library that put the path in the message
        return f"{_one_line(str(e)) or type(e).__name__} ({type(e).__name__}; {_SEE_MORE})"
    names = " -> ".join(os.fsdecode(f) for f in (e.filename, e.filename2) if f is not None)
    verb = "write" if e.errno in _WRITE_ERRNOS else "access"
    hint = _OS_HINTS.get(e.errno, _SEE_MORE)
    return f"cannot {verb} {names}: {e.strerror or type(e).__name__}; {hint}"


# Libraries that read files for speechcls: an exception of theirs that reaches the CLI is their word on a
# damaged or foreign file (a tar that is no archive, an edited zarr.json, an ONNX graph refusing its input),
# one line, not a traceback. Several derive from Exception alone (tarfile.TarError, onnxruntime's Fail and
# InvalidArgument), others from ValueError (json, zarr), whose raw text would read as if speechcls wrote it.
_LIBRARIES = frozenset(
    ("onnxruntime", "onnx", "zarr", "numcodecs", "tarfile", "zipfile", "json", "pickle", "_pickle", "soundfile",
     "fsspec", "google_crc32c")
)  # fmt: skip
_EXPECTED = (ValueError, OSError, RuntimeError, KeyError, EOFError, MemoryError)


def _library(e: BaseException) -> str | None:
    """The library that raised `e` where it is one of _LIBRARIES, else None."""
    module = type(e).__module__.split(".")[0]
    return module if module in _LIBRARIES else None


def error_line(e: BaseException) -> str:
    """The one line (after `error: `) the CLI prints for an exception it does not show as a traceback."""
    from speechcls.data.download import DownloadError

    first = (str(e).strip().splitlines() or [""])[0][:300]
    if isinstance(e, MemoryError):  # numpy's says what it could not allocate
        from speechcls.runtime import available_ram

        return (
            f"out of memory ({first or 'an allocation failed'}; {available_ram() / 2**30:.1f} GiB available): ask "
            "for less (a smaller --batch-size, --chunk-rows, a shorter recording) or free memory"
        )
    library = _library(e)
    if library is not None:
        what = f"{type(e).__name__}: {first}" if first else type(e).__name__
        return f"{library} could not read a file ({what}): a damaged or foreign file? {_SEE_MORE}"
    if isinstance(e, (ValueError, DownloadError)):
        return _one_line(str(e)) or type(e).__name__
    if isinstance(e, OSError):
        return _os_error_line(e)
    if type(e).__name__ == "OutOfMemoryError":  # torch's, a RuntimeError (no torch import here)
        return f"out of memory on the device ({first}); lower --batch-size, or {_SEE_MORE}"
    what = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return f"unexpected {what}. This is a bug or a damaged file; {_SEE_MORE}"


def _debug() -> bool:
    return _state["debug"] or os.environ.get("SPEECHCLS_DEBUG", "") not in ("", "0")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLI: `warning: <text>`, one line, not the source location."""
    from rich.text import Text

    console(stderr=True).print(Text.assemble(("warning:", "bold yellow"), " ", _one_line(str(message))), soft_wrap=True)


def user_errors(fn):
    """Every expected failure becomes `error: <what, which file, what to do>` on stderr and exit status 1,
    not a traceback (`--debug` or SPEECHCLS_DEBUG=1 shows the traceback instead): ValueError (a refusal),
    OSError, running out of memory, and the errors of the libraries that read files; warnings print as one
    `warning:` line. Messages are printed as plain text (see `console`): a path holding `[red]` stays as it is."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from rich.text import Text

        try:
            with warnings.catch_warnings():
                warnings.showwarning = _print_warning
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # RuntimeErrors too: they pass (typer's own API: click is not a dependency)
            raise
        except Exception as e:
            if not isinstance(e, _EXPECTED) and _library(e) is None:
                raise  # a bug: its traceback
            if _debug():
                if isinstance(e, EOFError):  # click turns an EOFError into "Aborted!": show it here
                    traceback.print_exc()
                    raise typer.Exit(1) from None
                raise
            line = Text.assemble(("error:", "bold red"), " ", error_line(e))
            console(stderr=True).print(line, soft_wrap=True)
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
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", envvar="SPEECHCLS_DEBUG", help="Show the traceback of an error instead of its one line."
        ),
    ] = False,
) -> None:
    """speechcls: spoken-word classifiers on Google's Speech Commands, fast and exact about features."""
    _state["debug"] = debug


# Help texts are rich markup: the "[default: ...]" of an option whose default is None (typer shows
# none) is written "\\[default: ...]" after the sentence, as typer writes its own; unescaped, rich
# takes it for a style tag and drops it, leaving a stray " .".
ReleaseOpt = Annotated[str, typer.Option("--release", help="Speech Commands release: v0.01 | v0.02.")]
# the old spelling, still accepted; hidden so that `--version` in the help means the app's version only
VersionAlias = Annotated[Optional[str], typer.Option("--version", hidden=True, help="Old spelling of --release.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
ManifestOpt = Annotated[
    Optional[Path],
    typer.Option(
        help="Instead of --root: a CSV (a header of path, label and optionally split, speaker) or JSONL file listing "
        "the clips, paths relative to its folder; splits from its split column, else by speaker (Speech Commands' "
        "hash).",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Feature store, a folder or an fsspec URL. \\[default: the one complete store under the cache]",
        show_default=False,
    ),
]
VariantOpt = Annotated[Optional[str], typer.Option(help="Narrow the store search to this variant.")]
OutFile = Annotated[Path, typer.Option("--out", "-o", help="Figure file: .png, .svg or .pdf.")]
OverwriteOpt = Annotated[
    bool, typer.Option(help="Replace an existing --out this command did not write (never a folder or a store's file).")
]


def check_version(version: str) -> str:
    if version not in config.RELEASES:
        raise typer.BadParameter(f"{version!r}: choose one of {', '.join(config.RELEASES)}", param_hint="--release")
    return version
