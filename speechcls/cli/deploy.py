"""`speechcls export`, `listen`: a trained model used outside training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls.cli.app import DeviceOpt, OverwriteOpt, app, user_errors

RunArg = Annotated[
    Path, typer.Argument(metavar="RUN_DIR|CHECKPOINT", help="A run folder (best.pt) or a .pt checkpoint.")
]


@app.command()
@user_errors
def export(
    run: RunArg,
    format: Annotated[str, typer.Option("--format", "-f", help="onnx | torchscript.")] = "onnx",
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="File to write. \\[default: beside the checkpoint, e.g. best.onnx]", show_default=False
        ),
    ] = None,
    frontend: Annotated[
        bool,
        typer.Option(
            "--with-frontend/--no-frontend",
            help="Input a 16 kHz waveform (batch, 16000) and compute the features in the file, or input the features.",
        ),
    ] = True,
    quantize: Annotated[
        Optional[str],
        typer.Option(
            help="int8: static int8 quantization of the model (ONNX; calibrated on the run's training features).",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a run's model as one ONNX or TorchScript file that runs without speechcls: by default from a
    float32 waveform to the class probabilities (STFT, mel, log and standardization as in training, the
    model, softmax); the classes and feature parameters are in the file's metadata."""
    from speechcls.infer.export import export as write

    r = write(run, format, out, frontend, quantize, overwrite=overwrite)
    inp, outp = r["input"], r["output"]
    typer.echo(
        f"{r['path']}: {r['format']}{', int8' if r['quantization'] != 'none' else ''}, {r['bytes'] / 1e6:.2f} MB; "
        f"input {inp['name']} ({', '.join(map(str, inp['shape']))}) float32 -> output {outp['name']} "
        f"({', '.join(map(str, outp['shape']))}): {len(r['classes'])} classes"
    )


@app.command()
@user_errors
def listen(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR|MODEL.onnx",
            help="A run folder or .pt checkpoint (torch), or a file from `speechcls export` with its front end.",
        ),
    ],
    files: Annotated[list[Path], typer.Argument(metavar="FILE.wav...", help="Recordings of any length.")],
    hop_ms: Annotated[float, typer.Option(help="Between the starts of successive one-second windows.")] = 100.0,
    threshold: Annotated[
        Optional[float],
        typer.Option(
            help="Smoothed probability a word must exceed. \\[default: the model's operating point from `speechcls "
            "stream eval`, else 0.8]",
            show_default=False,
        ),
    ] = None,
    smooth_ms: Annotated[float, typer.Option(help="Moving average of the probabilities over this long.")] = 500.0,
    refractory_ms: Annotated[
        float, typer.Option(help="A repeat of the same word within this long counts once.")
    ] = 1000.0,
    batch_size: Annotated[int, typer.Option(help="Windows per model call.")] = 64,
    min_windows: Annotated[
        int, typer.Option(help="The consecutive-window rule: a word must win this many windows in a row.")
    ] = 1,
    way: Annotated[
        str, typer.Option(help="auto | frames (the recording's features once, slid) | windows (each window's own).")
    ] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Spot keywords in recordings: a one-second window every --hop-ms, classified in batches, the
    probabilities smoothed over time (as TensorFlow's RecognizeCommands); prints the threshold and where it
    came from (the operating point `speechcls stream eval` saved in the run or the ONNX file, else 0.8),
    then each detection's word, start and end (seconds) and confidence. _silence_ and _unknown_ are never
    reported."""
    import json

    from speechcls.infer.listen import ListenConfig
    from speechcls.infer.listen import listen as spot

    cfg = ListenConfig(hop_ms, threshold, smooth_ms, refractory_ms, batch_size, way, min_windows).validate()
    results = spot(model, files, cfg, device)
    if json_out:
        typer.echo(json.dumps(results, indent=1))
    else:
        said = next((r for r in results if "threshold" in r), None)
        if said is not None:
            typer.echo(f"threshold {said['threshold']:g}: {said['threshold_from']}")
        for r in results:
            if "error" in r:
                typer.echo(f"{r['file']}: error: {r['error']}", err=True)
                continue
            typer.echo(
                f"{r['file']}: {r['seconds']:.1f} s, {len(r['detections'])} detections ({r['realtime']:.0f}x real time)"
            )
            for d in r["detections"]:
                typer.echo(f"  {d['start']:8.2f} - {d['end']:8.2f} s  {d['word']}  {d['confidence']:.3f}")
    if any("error" in r for r in results):
        raise typer.Exit(1)
