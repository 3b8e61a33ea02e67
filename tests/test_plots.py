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


def _best_lines(fig):
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "best-epoch"]


def test_curves_mark_the_best_epoch():
    # validation loss lowest at epoch 2 (then it rises: early stopping would keep epoch 2)
    log = [
        {"epoch": e, "set": s, "loss": loss, "acc": 0.5}
        for e, (tr, va) in enumerate([(2.0, 1.9), (1.5, 1.2), (1.2, 1.4), (1.0, 1.6)], start=1)
        for s, loss in (("train", tr), ("valid", va))
    ]
    assert plots.best_epoch(log) == 2
    assert plots.best_epoch(log, {"best_epoch": 3}) == 3  # metrics.json, when the run finished, wins
    fig = plots.curves_figure(log, "run", plots.best_epoch(log))
    lines = _best_lines(fig)
    assert len(lines) == 2  # one on the loss panel, one on the accuracy panel
    for ln in lines:
        assert set(ln.get_xdata()) == {2} and ln.get_label() == "best epoch 2"
    for ax in fig.axes:  # and the legend says what the line is
        assert "best epoch 2" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert _best_lines(plots.curves_figure(log, "run", None)) == []


def test_curves_of_a_run_use_its_best_epoch(tiny_run):
    from speechcls.engine.run_dir import RunDir

    rd = RunDir(tiny_run / "run")
    log, metrics = rd.read_log(), rd.read_metrics()
    fig = plots.curves_figure(log, "run", plots.best_epoch(log, metrics))
    assert {x for ln in _best_lines(fig) for x in ln.get_xdata()} == {metrics["best_epoch"]}


def _inside(box, fig_box):
    return box.x0 >= fig_box.x0 and box.y0 >= fig_box.y0 and box.x1 <= fig_box.x1 and box.y1 <= fig_box.y1


def test_confusion_layout_keeps_labels_inside_and_readable():
    # 35 classes with long names: the rotated tick labels push "predicted" down; it must stay in the figure
    classes = [f"word{i:02d}_long_name" for i in range(35)]
    rng = np.random.default_rng(0)
    conf = rng.integers(0, 20, (35, 35)) + np.diag(rng.integers(50, 100, 35))
    fig = plots.confusion_figure({"confusion": conf.tolist(), "classes": classes, "test_acc": 0.5})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    heat, alluvial = fig.axes[0], fig.axes[1]
    for label in (heat.xaxis.label, heat.yaxis.label, heat.title, alluvial.title):
        assert label.get_text() and _inside(label.get_window_extent(renderer), fig.bbox), label.get_text()
    for tick in heat.get_xticklabels():
        assert _inside(tick.get_window_extent(renderer), fig.bbox), tick.get_text()
    sizes = [t.get_fontsize() for t in heat.get_xticklabels() + heat.get_yticklabels() + alluvial.texts]
    assert min(sizes) >= 8
    legend = alluvial.get_legend()  # the two greys explained
    assert legend is not None and len(legend.get_texts()) == 2
    assert _inside(legend.get_window_extent(renderer), fig.bbox)


def test_spectrogram_title_names_the_word(clip, tmp_path):
    assert plots._clip_title(clip) == f'"bird" (bird/{clip.name})'
    loose = tmp_path / "somewhere" / clip.name  # not in a class folder: the file name only
    loose.parent.mkdir()
    shutil.copy(clip, loose)
    assert plots._clip_title(loose) == clip.name
