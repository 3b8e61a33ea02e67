"""`speechcls download`, `synth`, `data info`: getting and looking at a tree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechcls import config
from speechcls.cli.app import (
    ManifestOpt,
    ReleaseOpt,
    VersionAlias,
    app,
    check_version,
    console,
    data_app,
    user_errors,
)


@app.command()
@user_errors
def download(
    release: ReleaseOpt = config.DEFAULT_VERSION,
    version: VersionAlias = None,
    root: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder the tree is extracted to. \\[default: speech_commands_v0.0X under $SPEECHCLS_DATA or data/]",
            show_default=False,
        ),
    ] = None,
    url: Annotated[Optional[str], typer.Option(help="Fetch from this address instead (a mirror).")] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected SHA-256 of the archive at --url.")] = None,
    remove_archive: Annotated[bool, typer.Option(help="Delete the .tar.gz once extracted.")] = False,
) -> None:
    """Download, verify (SHA-256) and extract a Speech Commands release; resumes a partial download."""
    from speechcls.cli.progress import RichProgress
    from speechcls.data import download as dl

    version = check_version(version or release)  # --version: the old spelling of --release
    with RichProgress(console(stderr=True), transfer=True) as progress:
        tree, what = dl.download_release(version, root, url, sha256, progress)
    if remove_archive:
        dl.remove_archive(tree)
    typer.echo(f"{tree}: {'already extracted' if what == 'present' else 'downloaded, verified and extracted'}")


@app.command()
@user_errors
def synth(
    out: Annotated[
        Optional[Path],
        typer.Option(help="Tree to write. \\[default: $SPEECHCLS_DATA or data/, + synth_commands]", show_default=False),
    ] = None,
    words: Annotated[
        Optional[list[str]],
        typer.Option(
            "--words",
            "-w",
            help='Words or phrases to speak (repeat, or comma-separated: "hey computer,lights on"), a class '
            "folder each. \\[default: the 30 of v0.01]",
            show_default=False,
        ),
    ] = None,
    voices: Annotated[int, typer.Option(help="Speakers; each says every word once.", min=3)] = config.SYNTH_VOICES,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    noise: Annotated[
        float, typer.Option(help="Background noise amplitude relative to the speech peak (0 = clean).", min=0.0)
    ] = config.SYNTH_NOISE,
    snr: Annotated[
        Optional[str],
        typer.Option(
            help="Instead of --noise: background noise at a signal-to-noise ratio drawn in LOW,HIGH dB (e.g. 5,20).",
            metavar="LOW,HIGH",
            show_default=False,
        ),
    ] = None,
    reverb: Annotated[
        float, typer.Option(help="The chance that a clip is said in a simple synthetic room (0 = never).", min=0.0)
    ] = 0.0,
    clip_seconds: Annotated[
        float, typer.Option(help="Length of every clip (a phrase needs 1.5 to 2 s).", metavar="S")
    ] = config.CLIP_SECONDS,
    overwrite: Annotated[bool, typer.Option(help="Replace a different tree already at --out.")] = False,
) -> None:
    """Write a Speech Commands-style tree spoken by espeak-ng: offline demo and test data, or the positives of
    your own wake word (voices x speaking rates x pitches, with --reverb and --snr for rooms and noise)."""
    from speechcls.cli.progress import RichProgress
    from speechcls.data import synth as sy

    word_list = tuple(w for item in (words or ()) for w in item.split(",")) or config.V001_WORDS
    with RichProgress(console(stderr=True), unit="clips") as progress:
        tree, what = sy.synthesize(
            out, word_list, voices, seed, noise, overwrite, progress=progress, clip_seconds=clip_seconds,
            reverb=reverb, snr=None if snr is None else sy.parse_snr(snr),
        )  # fmt: skip
    if what == "present":
        typer.echo(f"{tree}: already written with these parameters")
    else:
        typer.echo(f"{tree}: {voices} voices x {len(set(word_list))} words = {voices * len(set(word_list))} clips")


@data_app.command("info")
@user_errors
def data_info(
    root: Annotated[
        Optional[Path],
        typer.Option(
            help="The tree. \\[default: $SPEECHCLS_DATA or data/, + speech_commands_v0.01]", show_default=False
        ),
    ] = None,
    manifest: ManifestOpt = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the random 60/20/20 split shown beside the official one.")
    ] = config.SPLIT_SEED,
    check_audio: Annotated[bool, typer.Option(help="Read every file's header (finds unreadable files).")] = True,
    clip_seconds: Annotated[
        float,
        typer.Option(
            help="The clip length to count shorter and longer clips against (featurize's).", metavar="S", min=0.01
        ),
    ] = config.CLIP_SECONDS,
    task: Annotated[
        str,
        typer.Option(
            help="words | kws12. kws12 also shows the task's examples per class and split: the ten words, the "
            "_unknown_ clips chosen, the _silence_ examples to cut from background noise (words: the table above)."
        ),
    ] = "words",
    keywords: Annotated[
        Optional[str],
        typer.Option(
            help="Show the keywords task of these labels (as train --keywords takes them).", show_default=False
        ),
    ] = None,
) -> None:
    """Classes, clips per class and split, speakers, missing list entries and unreadable files of a tree or a
    manifest."""
    from speechcls.audio import decode
    from speechcls.data import tree
    from speechcls.data.tasks import make_task, parse_keywords
    from speechcls.report import console as report

    words = parse_keywords(keywords) if keywords is not None else ()
    if words and task not in ("words", "keywords"):
        raise typer.BadParameter(f"--keywords is the keywords task, and --task {task} is another: choose one")
    if manifest is not None:
        if root is not None:
            raise typer.BadParameter("--root and --manifest: describe one source (a manifest's paths are its folder's)")
        from speechcls.data.manifest import read_manifest

        index = read_manifest(manifest)
    else:
        index = tree.index_tree(root if root is not None else config.default_root())
    # an unknown task, kws12 on a tree without its words, a keyword that is no label: refused first
    the_task = make_task("keywords" if words else task, index.classes, words)
    survey = decode.survey(index.root, index.paths, clip_seconds=clip_seconds) if check_audio else None
    out = console()
    report.print_index(index, seed, survey, out)
    if the_task.name != "words":
        print_task(index, the_task, seed, out)


def print_task(index, task, seed: int, out) -> None:
    """Examples of each of the task's classes per split, for the official split (where the tree has its
    lists) and the random one. Every clip counts: one that featurize cannot decode is left out of a store,
    so a store's counts can be lower."""
    from rich.table import Table

    from speechcls.data.noise import noise_files
    from speechcls.data.tasks import task_counts

    labels = [c.label for c in index.clips]
    kinds = [("official", index.official), (f"random (seed {seed})", index.split("random", seed))]
    counts = {kind: task_counts(task, labels, index.paths, codes) for kind, codes in kinds if codes is not None}
    table = Table(title=f"task {task.name}: examples per class and split", title_justify="left")
    table.add_column("label", justify="right")
    table.add_column("class")
    for kind in counts:
        for split in config.SPLITS:
            table.add_column(f"{kind} {split}", justify="right")
    for label, name in enumerate(task.classes):
        table.add_row(str(label), name, *(str(counts[k][s][name]) for k in counts for s in config.SPLITS))
    table.add_row("", "all", *(str(sum(counts[k][s].values())) for k in counts for s in config.SPLITS))
    out.print(table)
    if task.silence is not None:
        folder = index.root / config.BACKGROUND_DIR
        found = len(noise_files(folder)) if folder.is_dir() else 0
        out.print(
            f"{config.SILENCE}: cut from {found} background recording(s) in {folder}"
            + ("" if found else "; training this task needs --noise-dir"),
            markup=False,
        )
