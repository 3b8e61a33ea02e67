"""Every command's --help at 80 columns: defaults that read cleanly, whole choice lists, one name for the
run argument, no type placeholder beside a flag, --release for the dataset release."""

import re

import pytest
import typer
from typer.testing import CliRunner

from speechcls import __version__
from speechcls.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "80", "TERMINAL_WIDTH": "80"}


def _paths(command, prefix=()):  # a typer command or group (typer carries its own click)
    yield list(prefix)
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*prefix, name))


COMMANDS = list(_paths(typer.main.get_command(app)))


def _help(cmd):
    r = runner.invoke(app, [*cmd, "--help"], env=ENV)
    assert r.exit_code == 0, r.output
    return r.output


def test_every_command_is_walked():
    names = {" ".join(c) for c in COMMANDS}
    assert {"", "download", "featurize", "train", "evaluate", "predict", "plot curves", "report"} <= names


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_reads_cleanly(cmd):
    out = _help(cmd)
    # a "[default: ...]" that rich took for a style tag leaves "text ." behind
    assert not re.search(r"\S \.(\s|$)", out), out
    assert "<bool>" not in out, out
    assert "…" not in out, out  # nothing cut at 80 columns: every choice list and default is whole
    for line in out.splitlines():
        assert len(line) <= 80, line


def test_codec_choices_complete():
    flat = " ".join(_help(["featurize"]).replace("│", " ").split())
    assert "none | zstd-LEVEL | blosc-CNAME-LEVEL-SHUFFLE" in flat
    for word in (
        "lz4",
        "blosclz",
        "bitshuffle",
        "none for float32 spectra (spectrogram, mel, complex)",
        "blosc-lz4-5-bitshuffle for waveform and float16]",
    ):
        assert word in flat


@pytest.mark.parametrize(
    "cmd, metavar",
    [
        (["evaluate"], "RUN_DIR|CHECKPOINT"),
        (["predict"], "RUN_DIR|CHECKPOINT"),
        (["plot", "curves"], "RUN_DIR"),
        (["plot", "confusion"], "RUN_DIR"),
        (["report"], "RUN_DIR..."),
    ],
)
def test_run_argument_metavar(cmd, metavar):
    out = _help(cmd)
    usage = out[out.index("Usage:") :].splitlines()[0]
    assert "{" + metavar + "}" in usage, usage
    assert "checkpoint" not in usage.lower().replace("run_dir|checkpoint", "")


@pytest.mark.parametrize("cmd", [["download"], ["featurize"]])
def test_release_option(cmd):
    out = _help(cmd)
    assert "--release" in out
    assert not re.search(r"(?<![\w-])-v(?![\w-])", out)  # -v reads as verbose
    assert "--version" not in out  # the old spelling is accepted but hidden
    r = runner.invoke(app, [*cmd, "-v", "v0.01"], env=ENV)
    assert r.exit_code == 2 and "No such option" in r.output


@pytest.mark.parametrize("spelling", ["--release", "--version"])
def test_release_is_checked_under_both_spellings(spelling):
    r = runner.invoke(app, ["download", spelling, "v9"], env=ENV)
    assert r.exit_code != 0 and "'v9'" in r.output and "v0.01" in r.output


def test_app_version_still_prints_the_version():
    r = runner.invoke(app, ["--version"], env=ENV)
    assert r.exit_code == 0 and r.output.strip() == f"speechcls {__version__}"


def test_top_level_help_lists_the_commands_in_workflow_order():
    out = _help([])
    order = ["download", "synth", "data", "featurize", "info", "verify", "train", "lr-find", "evaluate",
             "predict", "export", "listen", "plot", "report", "bench"]  # fmt: skip
    at = [re.search(rf"^│ {re.escape(name)} ", out, re.M) for name in order]
    assert all(at), out
    assert [m.start() for m in at] == sorted(m.start() for m in at), out


def test_command_descriptions_reflow_at_any_width():
    """A hard-wrapped docstring broke mid-sentence at the source's line ends (export's description ended a
    line at "by default from a"): every command's help paragraph is one line, for rich to wrap."""
    stack, seen = [typer.main.get_command(app)], 0
    while stack:
        cmd = stack.pop()
        stack.extend(getattr(cmd, "commands", {}).values())
        for text in (cmd.help, cmd.short_help):
            for para in (text or "").split("\n\n"):
                assert "\n" not in para.replace("\n- ", " ").replace("\n* ", " "), (cmd.name, para)
        seen += 1
    assert seen >= len(COMMANDS)
    out = _help([])
    assert "by default from a\n" not in out and "window every --hop-ms," in out
