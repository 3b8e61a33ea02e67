"""`speechcls featurize` and `speechcls info`: making and describing feature stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls import config
from speechcls.cli.app import ManifestOpt, ReleaseOpt, VersionAlias, app, check_version, console, user_errors


@app.command()
@user_errors
def featurize(
    variant: Annotated[str, typer.Option(help="spectrogram | mel | complex | waveform.")] = "spectrogram",
    root: Annotated[
        Optional[Path],
        typer.Option(
            help="The tree. \\[default: speech_commands_v0.0X under data/, downloaded if absent]",
            show_default=False,
        ),
    ] = None,
    manifest: ManifestOpt = None,
    release: ReleaseOpt = config.DEFAULT_VERSION,
    version: VersionAlias = None,
    clip_seconds: Annotated[
        float,
        typer.Option(
            help="Every clip padded with zeros or truncated to this many seconds (1.0: Speech Commands' 16,000 "
            "samples); kept in the store, and training, evaluation, export and listen follow it.",
            metavar="S",
        ),
    ] = config.CLIP_SECONDS,
    out: Annotated[
        Optional[str],
        typer.Option(
            help="Store to write: a folder or an fsspec URL (s3://...). "
            "\\[default: <variant>-<hash>.zarr in cache/<dataset>/]",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[str, typer.Option(help="auto | torch | dali (DALI: spectrogram and mel on CPU).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    batch_size: Annotated[
        int, typer.Option(help="Clips per batched feature call.", min=1, metavar="N")
    ] = config.BATCH_SIZE,
    dtype: Annotated[str, typer.Option(help="float32 | float16 (waveform is always int16).")] = "float32",
    n_fft: Annotated[int, typer.Option(help="FFT size.")] = 512,
    win_length: Annotated[int, typer.Option(help="Window length in samples (0.03 s).")] = 480,
    hop_length: Annotated[int, typer.Option(help="Hop length in samples (0.01 s).")] = 160,
    n_mels: Annotated[int, typer.Option(help="Mel filters (mel only).")] = 128,
    f_min: Annotated[float, typer.Option(help="Lowest frequency (Hz) of the mel filters.")] = 0.0,
    f_max: Annotated[
        Optional[float],
        typer.Option(
            help="Highest frequency (Hz) of the mel filters. \\[default: sample rate / 2]", show_default=False
        ),
    ] = None,
    normalized: Annotated[bool, typer.Option(help="Divide by the window's norm, as the chapter does.")] = True,
    chunk_rows: Annotated[
        Optional[int],
        typer.Option(
            help="Rows per Zarr chunk. \\[default: ~16 MB of features]", min=1, metavar="N", show_default=False
        ),
    ] = None,
    codec: Annotated[
        str,
        typer.Option(
            help="none | zstd-LEVEL | blosc-CNAME-LEVEL-SHUFFLE, CNAME one of lz4 | zstd | blosclz, SHUFFLE one "
            "of shuffle | bitshuffle | none. \\[default: a store's own at --out; else none for float32 spectra "
            "(spectrogram, mel, complex), blosc-lz4-5-bitshuffle for waveform and float16]",
            show_default=False,
        ),
    ] = "",
    overwrite: Annotated[bool, typer.Option(help="Replace a store made with other settings.")] = False,
    workers: Annotated[
        Optional[int],
        typer.Option(
            help="Threads that compute CPU features, compress and read files (decoding has one thread of its "
            "own); the stored bytes do not depend on it. \\[default: every core]",
            min=1,
            metavar="N",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        bool, typer.Option(help="Print where the time went: each stage's busy seconds and clips/s, and the bound.")
    ] = False,
) -> None:
    """Turn every clip into features in batched device passes and store them in a chunked Zarr cache."""
    from speechcls import dist
    from speechcls.cli.progress import RichProgress
    from speechcls.featurize import featurize as run

    version = check_version(version or release)  # --version: the old spelling of --release
    params = config.FeatureParams(
        variant=variant, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels,
        f_min=f_min, f_max=f_max, normalized=normalized, dtype=dtype,
        clip_samples=config.clip_samples(clip_seconds),
    ).validate()  # fmt: skip
    main = dist.from_env().main  # under torchrun, rank 0 alone shows progress and the summary
    with RichProgress(console(stderr=True), unit="clips", disable=not main) as progress:
        result = run(
            params, root, version, out, backend, device, batch_size, chunk_rows, codec or None,
            overwrite, workers=workers, progress=progress, manifest=manifest,
        )  # fmt: skip
    if not main:
        return
    err = console(stderr=True)
    left_out = sorted((result.left_out or {}).items())
    for rel, reason in left_out[:20]:
        err.print(f"left out {rel} ({reason})")
    if len(left_out) > 20:
        err.print(f"... {len(left_out) - 20} more left out (`speechcls data info` lists all)")
    if left_out:
        what = "manifest row(s)" if manifest is not None else "entries of the tree (no clip files)"
        err.print(f"{len(left_out)} {what} left out: not in the store")
    for rel, reason in sorted(result.skipped.items())[:20]:
        err.print(f"skipped {rel}: {reason}")
    if len(result.skipped) > 20:
        err.print(f"... {len(result.skipped) - 20} more skipped (all listed in the store's attrs)")
    typer.echo(result.line())
    if profile and result.profile is not None:
        typer.echo("\n".join(result.profile.lines()))


@app.command()
@user_errors
def info(
    stores: Annotated[list[str], typer.Argument(metavar="STORE...", help="Feature stores (.zarr folders or URLs).")],
) -> None:
    """Variant, shape, dtype, chunks, codec, size on disk, ratio, classes, counts per split, skipped files."""
    from speechcls.report.console import print_store
    from speechcls.store import store_info

    for store in stores:
        print_store(store_info(store), console())


@app.command()
@user_errors
def verify(
    store: Annotated[str, typer.Argument(metavar="STORE", help="A feature store (.zarr folder or URL).")],
    root: Annotated[
        Optional[Path], typer.Option(help="The tree it was made from: check that it has not changed since.")
    ] = None,
    manifest: Annotated[
        Optional[Path],
        typer.Option(help="The manifest it was made from (instead of --root): check it and its clips are unchanged."),
    ] = None,
) -> None:
    """Read every chunk and check its checksum, the metadata and the attributes (and, with --root or
    --manifest, the source); exit 1 on any mismatch."""
    from speechcls.store.reader import verify as check

    r = check(store, str(root) if root is not None else None, str(manifest) if manifest is not None else None)
    for problem in r["problems"]:
        typer.echo(f"{store}: {problem}", err=True)
    status = "UNPROVEN" if r.get("unproven") else "DAMAGED" if r["problems"] else "ok"
    typer.echo(f"{store}: {status}: {r['chunks']} chunks, {r['bytes'] / 1e6:.1f} MB read and checked")
    if r["problems"]:
        raise typer.Exit(1)
