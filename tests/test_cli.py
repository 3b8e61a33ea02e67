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
