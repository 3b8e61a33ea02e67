"""The README is a front door that stays true (issue 23): at most 250 lines, every relative link points to
a file of the checkout, and its real-dataset flow runs, command by command, on the real-speech mini tree
(the same commands; the options that point them at the mini tree and keep them short are added here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechcls.cli import app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_every_relative_link_of_the_readme_points_into_the_checkout():
    links = re.findall(r"\]\(([^)]+)\)", README)
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert len(local) > 10
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, missing


def test_the_docs_pages_the_readme_links_are_in_the_site(tmp_path):
    nav = (REPO / "mkdocs.yml").read_text()
    pages = {link.split("#")[0].removeprefix("docs/") for link in re.findall(r"\]\((docs/[^)]+\.md[^)]*)\)", README)}
    assert pages and all(page in nav for page in pages), sorted(p for p in pages if p not in nav)


def flow() -> list[list[str]]:
    """The speechcls commands of the README's real-dataset block, as argument lists."""
    block = README.split("## On the real dataset", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("speechcls ")]


def test_the_flow_is_the_one_a_user_needs():
    assert [args[0] for args in flow()] == ["download", "featurize", "train", "evaluate", "export", "listen"]


@pytest.mark.slow
def test_the_readme_flow_runs_on_the_mini_tree(mini_root, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")
    monkeypatch.chdir(tmp_path)  # runs/... of the README land here
    store = tmp_path / "waveform.zarr"
    recording = next(iter(sorted((mini_root / "yes").glob("*.wav"))))
    noise = tmp_path / "noise"  # the mini tree has no _background_noise_ (kws12's silence comes from it)
    noise.mkdir()
    sf.write(noise / "white.wav", np.random.default_rng(0).normal(0, 0.1, 16000 * 20).clip(-1, 1), 16000, "PCM_16")
    extra = {
        "featurize": ["--root", str(mini_root), "--out", str(store)],
        "train": [
            "--store",
            str(store),
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--noise-dir",
            str(noise),
        ],
        "listen": ["--device", "cpu"],
    }
    for args in flow():
        if args[0] == "download":  # the network: the mini tree stands in for what it fetches
            continue
        args = [str(recording) if a == "recording.wav" else a for a in args]
        r = CliRunner().invoke(app, args + extra.get(args[0], []))
        assert r.exit_code == 0, f"speechcls {shlex.join(args)}:\n{r.output}"
    assert (tmp_path / "runs" / "kws12" / "best.onnx").is_file()
