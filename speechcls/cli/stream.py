"""`speechcls stream build`, `stream eval`: a long test stream with known words, and a model judged on it
as a deployed keyword spotter (false rejects at a rate of false accepts per hour)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls.cli.app import DeviceOpt, OverwriteOpt, app, user_errors

stream_app = typer.Typer(
    help="Long test streams with known words, and false rejects at a rate of false accepts per hour.",
    no_args_is_help=True,
)
app.add_typer(stream_app, name="stream")


@stream_app.command("build")
@user_errors
def build(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="PREFIX: writes PREFIX.wav, PREFIX.csv (word,start,end) and PREFIX.json."),
    ],
    store: Annotated[
        Optional[str],
        typer.Option(
            help="A feature store: its tree's clips and official split. \\[default: --root]", show_default=False
        ),
    ] = None,
    root: Annotated[
        Optional[Path], typer.Option(help="A Speech Commands tree with its lists.", show_default=False)
    ] = None,
    split: Annotated[
        str, typer.Option(help="train | validation | test: the clips and the noise region used.")
    ] = "test",
    minutes: Annotated[float, typer.Option(help="Length of the stream.")] = 10.0,
    snr_db: Annotated[str, typer.Option(help="LO,HI: each word's signal-to-noise ratio, uniform in dB.")] = "5,20",
    noise_dir: Annotated[
        Optional[Path],
        typer.Option(help="Background-noise WAVs. \\[default: the tree's _background_noise_]", show_default=False),
    ] = None,
    unknown_share: Annotated[
        float, typer.Option(help="Share of the placed clips that are other words (labelled _unknown_).")
    ] = 0.25,
    keywords: Annotated[
        Optional[str],
        typer.Option(
            help="W1,W2,...: the keywords. \\[default: the kws12 words the tree has, else every word]",
            show_default=False,
        ),
    ] = None,
    no_keywords: Annotated[
        bool,
        typer.Option(
            "--no-keywords", help="Leave the keywords out (their places stay background): false accepts alone."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Every choice (clips, times, SNRs, noise crops) follows from it.")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a long stream of background noise from the split's region of the noise recordings (the kws12
    rule: nothing training heard), the split's keyword clips at known, non-overlapping times with random
    gaps and SNRs, and other words as distractors; its labels as PREFIX.csv (seconds). The same seed gives
    the same files."""
    from speechcls.infer.stream import StreamSpec, build_stream, parse_range

    words = tuple(w.strip() for w in keywords.split(",") if w.strip()) if keywords else ()
    spec = StreamSpec(split, minutes, parse_range(snr_db), unknown_share, seed, words, no_keywords).validate()
    r = build_stream(out, root=root, store=store, spec=spec, noise_dir=noise_dir)
    placed = r["placed"]
    typer.echo(
        f"{r['files']['wav']}: {r['seconds'] / 60:.1f} min, {placed['keyword']} keywords "
        f"({', '.join(r['keywords'])}), {placed['unknown']} other words; labels {r['files']['csv']}"
    )
    if r["noise"]["distinct_seconds"] < r["seconds"]:
        typer.echo(
            f"note: the noise's {r['noise']['region']} regions hold {r['noise']['distinct_seconds']:.0f} s, so its "
            "crops repeat"
        )
    if r["skipped"]:
        typer.echo(f"note: {len(r['skipped'])} clips left out (not readable or silent): listed in {r['files']['json']}")


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


@stream_app.command("eval")
@user_errors
def evaluate(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="RUN|MODEL.onnx", help="A run folder or .pt checkpoint, or a file from `speechcls export`."
        ),
    ],
    wav: Annotated[Path, typer.Argument(metavar="PREFIX.wav", help="A stream from `speechcls stream build`.")],
    labels: Annotated[Path, typer.Option(help="Its labels, PREFIX.csv (word,start,end in seconds).")],
    target_fa_per_hour: Annotated[
        float, typer.Option(help="The operating point: the lowest FRR at no more false accepts per hour than this.")
    ] = 1.0,
    tolerance_ms: Annotated[
        float, typer.Option(help="A detection this near a label's spoken part lies on it.")
    ] = 500.0,
    hop_ms: Annotated[float, typer.Option(help="As listen's.")] = 100.0,
    smooth_ms: Annotated[float, typer.Option(help="As listen's.")] = 500.0,
    refractory_ms: Annotated[float, typer.Option(help="As listen's.")] = 1000.0,
    min_windows: Annotated[int, typer.Option(help="As listen's: windows in a row a word must win.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Windows per model call.")] = 64,
    way: Annotated[
        str, typer.Option(help="auto | frames (the stream's features once, slid) | windows (each window's own).")
    ] = "auto",
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Run listen's detector over the stream, match its detections to the labels (a hit counts once, a
    second detection is a false accept, a missed keyword a false reject, another keyword on it is wrong),
    sweep the threshold and write <run>/streaming.csv (threshold, word, frr, fa_per_hour, wrong, ...)
    and streaming.json with the operating point, which export and listen then use (beside an .onnx file:
    <name>.streaming.csv / .json)."""
    from speechcls.infer.listen import ListenConfig
    from speechcls.infer.stream_eval import evaluate_stream

    cfg = ListenConfig(hop_ms, None, smooth_ms, refractory_ms, batch_size, way, min_windows).validate()
    r = evaluate_stream(model, wav, labels, cfg, target_fa_per_hour, tolerance_ms, device, overwrite)
    for note in r["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(
        f"{wav}: {r['seconds'] / 60:.1f} min, {r['keyword_labels']} keywords, {r['unknown_labels']} other words; "
        f"one false accept = {r['fa_per_hour_resolution']:.2g} FA/h; {r['realtime']:,.0f}x real time ({r['way']})"
    )
    typer.echo(f"{'threshold':>9}  {'FRR':>7}  {'FA/h':>7}  {'wrong':>7}")
    shown = [row for row in r["rows"] if row["word"] == "all"]
    for row in shown[:: max(1, len(shown) // 12)]:
        typer.echo(
            f"{row['threshold']:>9.3f}  {_pct(row['frr']):>7}  {row['fa_per_hour']:>7.2f}  {_pct(row['wrong']):>7}"
        )
    for f, at in r["frr_at"].items():
        where = "not reached" if at is None else f"FRR {_pct(at['frr'])} at threshold {at['threshold']:g}"
        typer.echo(f"at <= {f} FA/h: {where}")
    point = r["operating_point"]
    if point is None:
        typer.echo(
            f"operating point: none (no threshold gives <= {target_fa_per_hour:g} FA/h on this stream); listen keeps "
            "its default threshold"
        )
    else:
        typer.echo(
            f"operating point: threshold {point['threshold']:g} (FRR {_pct(point['frr'])}, {point['fa_per_hour']:.2f} "
            f"FA/h, wrong {_pct(point['wrong'])}), saved in {r['files']['json']}"
        )
    typer.echo(r["files"]["csv"])
