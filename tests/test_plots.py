"""Figures from real clips and a tiny run; the HTML report in headless Chromium."""

import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import TrainConfig
from speechcls.engine.fit import fit
from speechcls.engine.lr_find import lr_find
from speechcls.report import plots

runner = CliRunner()


def assert_figure(path, min_size=(640, 480)):
    """A valid PNG, big enough, not blank."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path)
    img.verify()
    img = Image.open(path).convert("L")
    assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
    assert np.asarray(img, dtype=float).var() > 50  # something is drawn


@pytest.fixture(scope="module")
def clip(mini_root):
    return sorted((mini_root / "bird").glob("*.wav"))[0]


@pytest.fixture(scope="module")
def tiny_run(small_store, tmp_path_factory):
    base = tmp_path_factory.mktemp("plots")
    store = small_store()
    cfg = TrainConfig(store=str(store), device="cpu", batch_size=16, epochs=2)
    fit(cfg, base / "run")
    lr_find(cfg, base / "lr", steps=8)
    return base


@pytest.mark.parametrize(
    "args",
    [
        ["wave", "{clip}"],
        ["dft", "{clip}"],
        ["spectrogram", "{clip}"],
        ["spectrogram", "{clip}", "--variant", "mel"],
        ["spectrogram", "{clip}", "--variant", "complex"],
        ["melbank", "--n-mels", "16"],
        ["mel-vs-fourier", "{clip}", "--frame", "31"],
        ["lr", "{run}/lr"],
        ["lr", "{run}/lr/lr_find.csv"],
        ["curves", "{run}/run"],
        ["confusion", "{run}/run"],
    ],
    ids=lambda a: "-".join(x for x in a if not x.startswith("{")),
)
def test_every_plot(args, clip, tiny_run, tmp_path):
    out = tmp_path / "fig.png"
    args = [a.format(clip=clip, run=tiny_run) for a in args]
    r = runner.invoke(app, ["plot", *args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert_figure(out)


def test_fsdd_8khz_clip(fsdd_root, tmp_path):
    assert_figure(plots.spectrogram(fsdd_root / "3_jackson_0.wav", tmp_path / "s.png"))


def test_svg_and_pdf_by_suffix(clip, tmp_path):
    assert plots.wave(clip, tmp_path / "w.svg").read_text().lstrip().startswith("<?xml")
    assert plots.wave(clip, tmp_path / "w.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize(
    "args, message",
    [
        (["wave", "/nonexistent.wav"], "no such file"),
        (["spectrogram", "{bad}"], "not readable audio"),
        (["curves", "{empty}"], "no log.csv"),
        (["confusion", "{empty}"], "no metrics.json"),
        (["lr", "{empty}"], "no lr_find.csv"),
        (["curves", "/nonexistent/run"], "no such run folder"),
        (["spectrogram", "{clip}", "--variant", "cqt"], "--variant"),
        (["wave", "{clip}", "--out", "{tmp}/x.jpg"], ".png, .svg or .pdf"),
    ],
)
def test_bad_inputs_give_clear_errors(args, message, clip, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    args = [a.format(bad=bad, empty=empty, clip=clip, tmp=tmp_path) for a in args]
    r = runner.invoke(app, ["plot", *args])
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output


def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    out = tmp_path / "report.html"
    second = tmp_path / "run2"
    shutil.copytree(tiny_run / "run", second)
    r = runner.invoke(app, ["report", str(tiny_run / "run"), str(second), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page_text = out.read_text()
    assert page_text.count("data:image/png;base64,") == 4 and "test accuracy" in page_text
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert page.title() == "speechcls report"
        rows = page.eval_on_selector_all("table:first-of-type tr", "rs => rs.length")
        browser.close()
    assert len(widths) == 4 and all(w > 0 for w in widths)
    assert rows == 1 + 2 + 3  # header, two runs, the chapter's three reference rows
    assert errors == []


def test_report_needs_a_trained_run(tmp_path):
    r = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert r.exit_code != 0 and "no metrics.json" in r.output
