import errno
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from speechcls import __version__
from speechcls.cli import app

runner = CliRunner()

COMMANDS = [[], ["download"], ["synth"], ["data"], ["data", "info"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_of_every_command(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_cli_module_does_not_import_torch():
    # `speechcls --help` must be instant: torch and DALI load inside commands only
    code = (
        "import sys, speechcls.cli, speechcls.config; "
        "print(sorted(m for m in ('torch','nvidia.dali','zarr','torchaudio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_help():
    proc = subprocess.run([sys.executable, "-m", "speechcls", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "download" in proc.stdout and "synth" in proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["download", "--version", "v9"], "v0.01"),
        (["synth", "--voices", "1"], "--voices"),
        (["synth", "--noise", "-1"], "--noise"),
        (["data", "info", "--root", "/nonexistent/tree"], "no such directory"),
        (["nope"], "No such command"),
        (["synth", "--voices", "many"], "--voices"),
        (["download", "--root", "/nonexistent/tree", "--sha256", "abc"], "64 hexadecimal digits"),
    ],
)
def test_bad_arguments_give_an_error_not_a_traceback(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # typer's usage error or our Exit(1): no traceback
    assert "Traceback" not in result.output
    assert message in result.output


def test_data_info_on_the_mini_tree(mini_root):
    result = runner.invoke(app, ["data", "info", "--root", str(mini_root)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "30 classes, 300 clips, 41 speakers" in out
    assert "205 (30 spk)" in out and "44 (4 spk)" in out and "51 (7 spk)" in out
    assert "validation_list.txt: 6754 entries" in out and "testing_list.txt: 6784 entries" in out
    assert "21 shorter than 1 s" in out
    assert "unreadable files: 0" in out
    longer = runner.invoke(app, ["data", "info", "--root", str(mini_root), "--clip-seconds", "1.5"]).output
    assert "300 shorter than 1.5 s, 0 longer" in longer  # counted against featurize's --clip-seconds


def test_data_info_reports_unreadable_files(tmp_path, mini_root):
    import shutil

    for word in ("yes", "no"):
        (tmp_path / word).mkdir()
        for wav in sorted((mini_root / word).glob("*.wav"))[:2]:
            shutil.copy(wav, tmp_path / word / wav.name)
    (tmp_path / "no" / "deadbeef_nohash_0.wav").write_bytes(b"this is not a wav file")
    result = runner.invoke(app, ["data", "info", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "unreadable files: 1" in result.output
    assert "no/deadbeef_nohash_0.wav" in result.output
    assert "official split: none" in result.output


def test_synth_then_info(tmp_path, espeak):
    out = tmp_path / "tree"
    result = runner.invoke(app, ["synth", "--out", str(out), "--words", "yes,no", "--words", "go", "--voices", "3"])
    assert result.exit_code == 0, result.output
    assert "3 voices x 3 words = 9 clips" in result.output
    again = runner.invoke(app, ["synth", "--out", str(out), "--words", "yes,no", "--words", "go", "--voices", "3"])
    assert "already written" in again.output
    info = runner.invoke(app, ["data", "info", "--root", str(out)])
    assert "3 classes, 9 clips, 3 speakers, 3 background noise files" in info.output


def test_download_command_against_local_server(tmp_path):
    from test_download import GOOD, Server, make_tar

    server = Server()
    try:
        sha = server.serve(make_tar(GOOD))
        root = tmp_path / "sc"
        args = ["download", "--root", str(root), "--url", server.url, "--sha256", sha, "--remove-archive"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "extracted" in result.output
        assert (root / "yes" / "0a7c2a8d_nohash_0.wav").is_file()
        assert not (tmp_path / "sc.tar.gz").exists()
        bad = runner.invoke(
            app, ["download", "--root", str(tmp_path / "sc2"), "--url", server.url, "--sha256", "0" * 64]
        )
        assert bad.exit_code == 1 and "does not match" in bad.output
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# --- every expected failure is one line ----------------------------------------------------------------


def _error_line(result) -> str:
    """The one line a failed command prints: `error: ...` on stderr, exit status 1, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_paths_in_errors_are_printed_literally(tmp_path):
    odd = tmp_path / "[red]x[/] [/] :smile:"  # rich markup and an emoji code (three folders): printed as they are
    odd.mkdir(parents=True)
    line = _error_line(runner.invoke(app, ["data", "info", "--root", str(odd)]))
    assert line.startswith(f"error: {odd}: no word folders with .wav files")


SEE_MORE = "run again with --debug (or SPEECHCLS_DEBUG=1) to see the traceback"


@pytest.mark.parametrize(
    "exc, expected",
    [
        (
            OSError(errno.EROFS, "Read-only file system", "/ro/run/config.json"),
            "cannot write /ro/run/config.json: Read-only file system; choose another --out (or another place to write)",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/[red]tree[/]"),
            "cannot access /data/[red]tree[/]: Permission denied; check the permissions, or choose another path",
        ),
        (
            ConnectionResetError("connection reset by peer"),
            f"connection reset by peer (ConnectionResetError; {SEE_MORE})",
        ),
        (
            RuntimeError("boom [/]\nsecond line"),
            f"unexpected RuntimeError: boom [/]. This is a bug or a damaged file; {SEE_MORE}",
        ),
        (KeyError("model"), f"unexpected KeyError: 'model'. This is a bug or a damaged file; {SEE_MORE}"),
        (EOFError(), f"unexpected EOFError. This is a bug or a damaged file; {SEE_MORE}"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_other_failures_are_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path, exc, expected):
    from speechcls.data import tree

    def fail(root):
        raise exc

    monkeypatch.setattr(tree, "index_tree", fail)
    args = ["data", "info", "--root", str(tmp_path)]
    assert _error_line(runner.invoke(app, args)) == f"error: {expected}"
    for debug in (runner.invoke(app, ["--debug", *args]), runner.invoke(app, args, env={"SPEECHCLS_DEBUG": "1"})):
        if isinstance(exc, EOFError):  # click would turn it into "Aborted!": the traceback is printed instead
            assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.output, debug.output
        else:
            assert debug.exception is exc


def test_a_list_file_that_is_not_utf8_is_one_line_naming_it(tmp_path, mini_root):
    import shutil

    (tmp_path / "yes").mkdir()
    shutil.copy(next((mini_root / "yes").glob("*.wav")), tmp_path / "yes")
    (tmp_path / "testing_list.txt").write_bytes(b"yes/\xff\xfe_nohash_0.wav\n")
    line = _error_line(runner.invoke(app, ["data", "info", "--root", str(tmp_path)]))
    assert f"{tmp_path / 'testing_list.txt'}: not UTF-8 text" in line


def test_data_info_lists_unusable_entries_and_classes_without_training_clips(tmp_path, mini_root):
    import os
    import shutil

    for word in ("yes", "no", "up"):
        (tmp_path / word).mkdir()
        for wav in sorted((mini_root / word).glob("*.wav"))[:2]:
            shutil.copy(wav, tmp_path / word / wav.name)
    up = sorted(f"up/{p.name}" for p in (tmp_path / "up").iterdir())
    (tmp_path / "validation_list.txt").write_text(up[0] + "\n")
    (tmp_path / "testing_list.txt").write_text(up[1] + "\n")
    (tmp_path / "yes" / "dir_nohash_0.wav").mkdir()
    os.symlink("nowhere.wav", tmp_path / "yes" / "gone_nohash_0.wav")
    os.symlink("loop_nohash_0.wav", tmp_path / "yes" / "loop_nohash_0.wav")
    result = runner.invoke(app, ["data", "info", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "3 classes, 6 clips" in out and "unreadable files: 0" in out
    assert "unusable entries (not clips, left out): 3" in out
    assert "yes/dir_nohash_0.wav: a directory, not an audio file" in out
    assert "yes/gone_nohash_0.wav: a broken symbolic link (to nowhere.wav)" in out
    assert "yes/loop_nohash_0.wav: a symbolic link loop" in out
    assert "class 'up': no training clips in the official split" in out
    assert "class 'yes': no training clips in the official split" not in out
