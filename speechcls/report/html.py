"""`speechcls report`: one self-contained HTML page (images embedded) comparing runs."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from speechcls.runtime import write_text_atomic

CHAPTER = {"spectrogram": (32, 0.3776, 0.8898), "mel": (19, 0.5081, 0.8555), "complex": (40, 0.2373, 0.9324)}
CHAPTER_DATA = "Speech Commands v0.01, random 60/20/20 (the chapter)"
SYNTHETIC = "synthetic (espeak-ng), not speech"
# in every page's head: how a rerun knows its own page, which it may rewrite without --overwrite
MARK = '<meta name="generator" content="speechcls report">'


def run_data(metrics: dict, cfg: dict) -> str:
    """The data a run's numbers come from, from its store's attributes: the tree's name, marked
    synthetic where `speechcls synth` wrote it; "unknown" where the store cannot be read (gone, moved)."""
    from speechcls import config
    from speechcls.data.synth import MARKER
    from speechcls.store.reader import read_attrs

    store = metrics.get("store") or cfg.get("store")  # metrics: the store resolved; config: as given
    if not store:
        return "unknown"
    try:
        dataset = read_attrs(store).get("dataset") or {}
    except Exception:  # gone, moved or not a store: zarr and fsspec raise many kinds
        return "unknown"
    name = dataset.get("name") or "unknown"
    root = Path(dataset.get("source_root") or "")
    if name == config.SYNTH_DIRNAME or (dataset.get("source_root") and (root / MARKER).is_file()):
        return f"{name}: {SYNTHETIC}"
    return f"{name} (Speech Commands {dataset['version']})" if dataset.get("version") else name


def streaming(run: Path) -> dict | None:
    """The run's streaming.json (`speechcls stream eval`) where it has one with a curve to draw, else None."""
    from speechcls.infer.stream_results import read_results, result_paths

    record = read_results(run)
    if record is None or not record.get("keyword_labels") or not result_paths(run)["csv"].is_file():
        return None
    return record


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def streaming_section(loaded: list[tuple]) -> str:
    """The page's keyword-spotting section: per judged run, the stream, FRR at 1 and 0.1 FA/h, the operating
    point, and its DET curve; "" where no run was judged."""
    esc = html.escape
    rows, figures = [], []
    for run, _m, _cfg, img in loaded:
        record = streaming(run)
        if record is None:
            continue
        at, point = record.get("frr_at", {}), record.get("operating_point")
        cells = [
            run.name, Path(record["stream"]).name, f"{record['seconds'] / 60:.1f} min", record["keyword_labels"],
            f"{record['fa_per_hour_resolution']:.2g}", _pct((at.get("1") or {}).get("frr")),
            _pct((at.get("0.1") or {}).get("frr")),
            "none" if point is None else f"{point['threshold']:g} (FRR {_pct(point['frr'])}, "
            f"{point['fa_per_hour']:.2g} FA/h)",
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
        figures.append(f"<img alt='DET curve of {esc(run.name)}' src='{img['det']}'>")
    if not rows:
        return ""
    head = ["run", "stream", "length", "keywords", "1 false accept (FA/h)", "FRR at 1 FA/h", "FRR at 0.1 FA/h",
            "operating point (at the target)"]  # fmt: skip
    return (
        "<h2>Keyword spotting on a stream</h2>\n<p>From <code>speechcls stream eval</code>: false rejects at a rate "
        "of false accepts per hour on a long stream with known words; listen and export use the operating point. "
        "On a stream shorter than an hour, one false accept is more than 1 FA/h: there 'FRR at 1 FA/h' means no "
        "false accept at all.</p>\n"
        f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table>{''.join(figures)}"
    )


def _load(runs: list[Path]) -> list[tuple]:
    """(run, metrics, config, {figure: data URI}) of each run."""
    from speechcls.engine.run_dir import RunDir
    from speechcls.report import det, plots

    loaded = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            metrics, cfg = RunDir(run).read_metrics(), RunDir(run).read_config()  # first: names what is missing
            images = {}
            for kind, fn in (("curves", plots.curves), ("confusion", plots.confusion)):
                png = fn(run, Path(tmp) / f"{i}-{kind}.png")
                images[kind] = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
            if streaming(run) is not None:  # judged by `speechcls stream eval`: its DET curve
                png = det.det([run], Path(tmp) / f"{i}-det.png")
                images["det"] = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
            loaded.append((run, metrics, cfg, images))
    return loaded


def html_report(runs: list, out):
    """One self-contained HTML page (images embedded as data URIs) comparing runs side by side."""
    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("give at least one run folder")
    loaded = _load(runs)

    esc = html.escape
    head = [
        "run",
        "data",
        "variant",
        "split",
        "epochs",
        "test loss",
        "test accuracy",
        "train samples/s",
        "loader",
        "device",
    ]
    data = {run: run_data(m, cfg) for run, m, cfg, _ in loaded}  # each store's attributes read once
    rows = []
    for run, m, cfg, _ in loaded:
        sps = m.get("train_samples_per_s")
        cells = [
            run.name,
            data[run],
            m.get("variant", "?"),
            cfg.get("split_kind", cfg.get("split", "?")),
            m["epochs_run"],
            f"{m['test_loss']:.4f}",
            f"{m['test_acc']:.4f}",
            f"{sps:,.0f}" if sps else "-",
            m.get("loader_mode", "?"),
            m.get("device", "?"),
        ]
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    for variant, (epochs, loss, acc) in CHAPTER.items():
        rows.append(
            f"<tr class='ref'><td>chapter (R torch)</td><td>{CHAPTER_DATA}</td><td>{variant}</td>"
            f"<td>random 60/20/20</td><td>{epochs}</td>"
            f"<td>{loss:.4f}</td><td>{acc:.4f}</td><td>-</td><td>-</td><td>-</td></tr>"
        )
    classes = loaded[0][1]["classes"]
    pc_head = "".join(f"<th>{esc(r.name)}</th>" for r, *_ in loaded)
    pc_rows = []
    for c in classes:
        vals = []
        for _, m, _, _ in loaded:
            a = m["per_class_acc"].get(c)
            vals.append("-" if a is None else f"{a:.3f}")
        pc_rows.append(f"<tr><td>{esc(c)}</td>" + "".join(f"<td>{v}</td>" for v in vals) + "</tr>")
    sections = []
    for run, m, _, img in loaded:
        sections.append(
            f"<section><h2>{esc(run.name)}</h2><p>{esc(str(run))} ({esc(data[run])}): "
            f"{m['epochs_run']} epochs, best epoch "
            f"{m.get('best_epoch', '?')}, test accuracy {m['test_acc']:.4f}</p>"
            f"<img alt='training curves of {esc(run.name)}' src='{img['curves']}'>"
            f"<img alt='confusion of {esc(run.name)}' src='{img['confusion']}'></section>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{MARK}<title>speechcls report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.ref {{ color: #777; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head><body>
<h1>speechcls report</h1>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{"".join(rows)}</table>
<p>The chapter's numbers are for reference: its random split mixes speakers across train and test, the
official split does not. A run on a synthetic tree (espeak-ng voices saying the words) shows that the
pipeline works; its accuracy says nothing about recognizing human speech.</p>
<h2>Per-class test accuracy</h2>
<table><tr><th>class</th>{pc_head}</tr>{"".join(pc_rows)}</table>
{streaming_section(loaded)}
{"".join(sections)}
</body></html>
"""
    return write_text_atomic(out, page)


def check_out(out, runs: list, overwrite: bool = False) -> Path:
    """The page's --out, before any work (runtime.check_out): never a file of the runs it reads, a
    checkpoint or a page it did not write (MARK), unless `overwrite`."""
    from speechcls import runtime
    from speechcls.engine.run_dir import RUN_FILES

    reads = tuple(Path(r) / name for r in runs for name in RUN_FILES)
    return runtime.check_out(out, reads=reads, own=runtime.marked(MARK.encode()), overwrite=overwrite, command="report")
