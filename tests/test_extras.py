"""A command that needs an optional extra which is not installed says which one, in one line, before it
does any work (issue 23). "Not installed" is simulated by a None entry in sys.modules, which makes both
importlib's find_spec and an import see the package as absent."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.runtime import require_extra


def one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    return lines[0]


def test_require_extra_names_the_first_missing_module_and_the_extra(monkeypatch):
    require_extra("x", "export", "json", "numpy")  # present: nothing happens
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(ValueError, match=r"^x needs numpy, which is not installed: pip install 'speechcls\[y\]'$"):
        require_extra("x", "y", "json", "numpy", "also.absent")
    with pytest.raises(ValueError, match="needs no_such_package_xyz"):
        require_extra("x", "y", "no_such_package_xyz.sub")  # a missing parent package is a missing module


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnxruntime"])
def test_export_without_the_export_extra(module, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    run = tmp_path / "run"
    run.mkdir()
    line = one_line_error(CliRunner().invoke(app, ["export", str(run)]))
    assert f"needs {module}" in line and "pip install 'speechcls[export]'" in line
    assert list(run.iterdir()) == []  # refused before anything was written


def test_torchscript_export_needs_no_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    r = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "torchscript"])
    assert "speechcls[export]" not in r.output  # fails on the empty folder, not on the extra


def test_listen_to_an_onnx_file_without_onnxruntime(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07")
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"")
    line = one_line_error(CliRunner().invoke(app, ["listen", str(model), str(wav)]))
    assert "needs onnxruntime" in line and "pip install 'speechcls[export]'" in line


URLS = [("s3://b/x.zarr", "s3fs", "s3"), ("gs://b/x.zarr", "gcsfs", "gcs")]


@pytest.mark.parametrize(("url", "package", "extra"), URLS)
def test_a_store_url_without_its_protocol_package(url, package, extra, mini_root, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)
    r = CliRunner().invoke(app, ["featurize", "--root", str(mini_root), "--out", url, "--device", "cpu"])
    line = one_line_error(r)
    assert f"needs {package}" in line and f"pip install 'speechcls[{extra}]'" in line
