"""Tables for people: what a tree holds (`speechcls data info`)."""

from __future__ import annotations

from collections import Counter

from speechcls import config
from speechcls.dataset import DatasetIndex, speakers_by_split, split_counts
from speechcls.decode import AudioSurvey


def print_index(index: DatasetIndex, seed: int, survey: AudioSurvey | None, console) -> None:
    from rich.table import Table

    official = index.official
    rand = index.split("random", seed)
    console.print(f"[bold]{index.name}[/]  ({index.root})")
    console.print(
        f"{len(index.classes)} classes, {len(index.clips)} clips, "
        f"{len(set(index.speakers))} speakers, {len(index.background)} background noise files"
    )

    table = Table(title="clips per class", title_justify="left")
    table.add_column("label", justify="right")
    table.add_column("class")
    table.add_column("clips", justify="right")
    if official is not None:
        for name in config.SPLITS:
            table.add_column(name, justify="right")
    per_class = Counter(c.label for c in index.clips)
    per_class_split = Counter((c.label, int(s)) for c, s in zip(index.clips, official)) if official is not None else None
    for label, name in enumerate(index.classes):
        row = [str(label), name, str(per_class[label])]
        if per_class_split is not None:
            row += [str(per_class_split[label, i]) for i in range(len(config.SPLITS))]
        table.add_row(*row)
    console.print(table)

    splits = Table(title="splits", title_justify="left")
    splits.add_column("split")
    for name in config.SPLITS:
        splits.add_column(name, justify="right")
    splits.add_column("speakers shared", justify="right")
    for title, codes in (("official", official), (f"random 60/20/20 (seed {seed})", rand)):
        if codes is None:
            continue
        counts = split_counts(codes)
        groups = speakers_by_split(index, codes)
        shared = len((groups["train"] & groups["validation"]) | (groups["train"] & groups["test"]) | (groups["validation"] & groups["test"]))
        splits.add_row(title, *(f"{counts[n]} ({len(groups[n])} spk)" for n in config.SPLITS), str(shared))
    console.print(splits)

    if official is None:
        console.print(f"official split: none ({config.VALIDATION_LIST} / {config.TESTING_LIST} not in the tree)")
    for name, absent in index.missing.items():
        console.print(f"{name}: {absent} entries name files not in this tree")
    if survey is not None:
        rates = ", ".join(f"{r} Hz: {n}" for r, n in sorted(survey.sample_rates.items()))
        chans = ", ".join(f"{c} ch: {n}" for c, n in sorted(survey.channels.items()))
        console.print(f"audio: {rates or '-'}; {chans or '-'}; {survey.short} shorter than 1 s, {survey.long} longer")
        console.print(f"unreadable files: {len(survey.unreadable)}")
        for path, reason in sorted(survey.unreadable.items())[:20]:
            console.print(f"  {path}: {reason}", markup=False)
        if len(survey.unreadable) > 20:
            console.print(f"  ... and {len(survey.unreadable) - 20} more")


def print_store(info: dict, console) -> None:
    state = "complete" if info["complete"] else "[bold red]INCOMPLETE[/] (run the featurize command again to finish)"
    if info.get("lost_chunks"):
        lost = ", ".join(f"{k} {n} of {of}" for k, (n, of) in sorted(info["lost_chunks"].items()))
        state = f"[bold red]DAMAGED[/]: lost chunk objects ({lost}); run the featurize command again to repair"
    console.print(f"[bold]{info['path']}[/]: {info['variant']} store, {state}")
    console.print(
        f"features {tuple(info['shape'])} {info['dtype']}, chunks {tuple(info['chunks'])}, codec {info['codec']}"
    )
    console.print(
        f"{info['bytes_on_disk'] / 1e6:.1f} MB on disk; features {info['features_bytes_on_disk'] / 1e6:.1f} MB, "
        f"compression {info['compression_ratio']:.2f}x"
    )
    params = ", ".join(f"{k}={v}" for k, v in info["params"].items() if k != "variant")
    console.print(f"parameters: {params}", markup=False)
    ds = info.get("dataset", {})
    console.print(f"dataset: {ds.get('name')} from {ds.get('source_root')}", markup=False)
    console.print(f"{len(info['classes'])} classes: {', '.join(info['classes'])}", markup=False)
    console.print(
        f"valid clips: {info['valid']} of {info['shape'][0]}; "
        + ", ".join(f"{k} {v}" for k, v in info["per_split"].items())
    )
    console.print(f"skipped files: {len(info['skipped'])}")
    for path, reason in sorted(info["skipped"].items())[:20]:
        console.print(f"  {path}: {reason}", markup=False)


def print_evaluation(r: dict, console) -> None:
    from rich.table import Table

    console.print(f"[bold]{r['split']}[/]: {r['n']} clips, loss {r['loss']:.4f}, accuracy {r['acc']:.4f}")
    table = Table(title="per-class accuracy", title_justify="left")
    table.add_column("class")
    table.add_column("acc", justify="right")
    for c, a in r["per_class_acc"].items():
        table.add_row(c, "-" if a is None else f"{a:.3f}")
    console.print(table)
    if r["most_confused"]:
        console.print("most confused (true -> predicted: count): " + ", ".join(f"{t} -> {p}: {n}" for t, p, n in r["most_confused"]))


CHAPTER = {"spectrogram": (32, 0.3776, 0.8898), "mel": (19, 0.5081, 0.8555), "complex": (40, 0.2373, 0.9324)}


def html_report(runs: list, out):
    """One self-contained HTML page (images embedded as data URIs) comparing runs side by side."""
    import base64
    import html
    import json
    import tempfile
    from pathlib import Path

    from speechcls import plots

    runs = [Path(r) for r in runs]
    if not runs:
        raise ValueError("give at least one run folder")
    loaded = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(runs):
            metrics_path = plots._run_file(run, "metrics.json", "train it first (speechcls train)")
            metrics = json.loads(metrics_path.read_text())
            cfg_path = run / "config.json"
            cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
            images = {}
            for kind, fn in (("curves", plots.curves), ("confusion", plots.confusion)):
                png = fn(run, Path(tmp) / f"{i}-{kind}.png")
                images[kind] = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
            loaded.append((run, metrics, cfg, images))

    esc = html.escape
    head = ["run", "variant", "split", "epochs", "test loss", "test accuracy", "train samples/s", "loader", "device"]
    rows = []
    for run, m, cfg, _ in loaded:
        sps = m.get("train_samples_per_s")
        cells = [run.name, m.get("variant", "?"), cfg.get("split", "?"), m["epochs_run"], f"{m['test_loss']:.4f}",
                 f"{m['test_acc']:.4f}", f"{sps:,.0f}" if sps else "-", m.get("loader_mode", "?"), m.get("device", "?")]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
    for variant, (epochs, loss, acc) in CHAPTER.items():
        rows.append(f"<tr class='ref'><td>chapter (R torch)</td><td>{variant}</td><td>random 60/20/20</td><td>{epochs}</td>"
                    f"<td>{loss:.4f}</td><td>{acc:.4f}</td><td>-</td><td>-</td><td>-</td></tr>")  # fmt: skip
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
            f"<section><h2>{esc(run.name)}</h2><p>{esc(str(run))}: {m['epochs_run']} epochs, best epoch "
            f"{m.get('best_epoch', '?')}, test accuracy {m['test_acc']:.4f}</p>"
            f"<img alt='training curves of {esc(run.name)}' src='{img['curves']}'>"
            f"<img alt='confusion of {esc(run.name)}' src='{img['confusion']}'></section>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>speechcls report</title>
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
official split does not.</p>
<h2>Per-class test accuracy</h2>
<table><tr><th>class</th>{pc_head}</tr>{"".join(pc_rows)}</table>
{"".join(sections)}
</body></html>
"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
