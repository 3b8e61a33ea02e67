"""Tables for people: what a tree holds (`speechcls data info`), what a store holds (`speechcls info`),
an evaluation (`speechcls evaluate`).

Printed on the CLI's console, which reads no markup (cli/app.py's `console`): class names, paths and
reasons from files are passed as they are, and the few styled words are rich Text."""

from __future__ import annotations

from collections import Counter

from speechcls import config
from speechcls.audio.decode import AudioSurvey
from speechcls.data.tree import DatasetIndex, speakers_by_split, split_counts


def print_index(index: DatasetIndex, seed: int, survey: AudioSurvey | None, console) -> None:
    from rich.table import Table
    from rich.text import Text

    official = index.official
    rand = index.split("random", seed)
    console.print(Text.assemble((index.name, "bold"), f"  ({index.root})"))
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
    per_class_split = (
        Counter((c.label, int(s)) for c, s in zip(index.clips, official)) if official is not None else None
    )
    for label, name in enumerate(index.classes):
        row = [str(label), name, str(per_class[label])]
        if per_class_split is not None:
            row += [str(per_class_split[label, i]) for i in range(len(config.SPLITS))]
        table.add_row(*row)
    console.print(table)
    _print_untrained(index, official, rand, seed, console)

    splits = Table(title="splits", title_justify="left")
    splits.add_column("split")
    for name in config.SPLITS:
        splits.add_column(name, justify="right")
    splits.add_column("speakers shared", justify="right")
    kind = "official" if index.manifest is None else "manifest (split column, else speaker hash)"
    for title, codes in ((kind, official), (f"random 60/20/20 (seed {seed})", rand)):
        if codes is None:
            continue
        counts = split_counts(codes)
        groups = speakers_by_split(index, codes)
        shared = len(
            (groups["train"] & groups["validation"])
            | (groups["train"] & groups["test"])
            | (groups["validation"] & groups["test"])
        )
        splits.add_row(title, *(f"{counts[n]} ({len(groups[n])} spk)" for n in config.SPLITS), str(shared))
    console.print(splits)

    if official is None:
        console.print(f"official split: none ({config.VALIDATION_LIST} / {config.TESTING_LIST} not in the tree)")
    for name, absent in index.missing.items():
        console.print(f"{name}: {absent} entries name files not in this tree")
    if index.unusable:
        console.print(f"unusable entries (not clips, left out): {len(index.unusable)}")
        for path, reason in sorted(index.unusable.items())[:20]:
            console.print(f"  {path}: {reason}")
        if len(index.unusable) > 20:
            console.print(f"  ... and {len(index.unusable) - 20} more")
    if survey is not None:
        rates = ", ".join(f"{r} Hz: {n}" for r, n in sorted(survey.sample_rates.items()))
        chans = ", ".join(f"{c} ch: {n}" for c, n in sorted(survey.channels.items()))
        lengths = f"{survey.short} shorter than {survey.clip_seconds:g} s, {survey.long} longer"
        console.print(f"audio: {rates or '-'}; {chans or '-'}; {lengths}")
        console.print(f"unreadable files: {len(survey.unreadable)}")
        for path, reason in sorted(survey.unreadable.items())[:20]:
            console.print(f"  {path}: {reason}")
        if len(survey.unreadable) > 20:
            console.print(f"  ... and {len(survey.unreadable) - 20} more")


def _print_untrained(index: DatasetIndex, official, rand, seed: int, console) -> None:
    """One line per class without a training clip in a split kind: a model cannot learn that class."""
    kinds = [
        ("official", official, "add clips, or take some of its clips out of the validation / testing lists"),
        (f"random (seed {seed})", rand, "add clips"),
    ]
    for kind, codes, hint in kinds:
        if codes is None:
            continue
        trained = {c.label for c, code in zip(index.clips, codes) if code == 0}
        for label, name in enumerate(index.classes):
            if label not in trained:
                console.print(
                    f"class {name!r}: no training clips in the {kind} split; a model trained on this tree cannot "
                    f"learn it ({hint})"
                )


def print_store(info: dict, console) -> None:
    from rich.text import Text

    state = (
        ("complete",)
        if info["complete"]
        else (("INCOMPLETE", "bold red"), " (run the featurize command again to finish)")
    )
    if info.get("lost_chunks"):
        lost = ", ".join(f"{k} {n} of {of}" for k, (n, of) in sorted(info["lost_chunks"].items()))
        state = (("DAMAGED", "bold red"), f": lost chunk objects ({lost}); run the featurize command again to repair")
    console.print(Text.assemble((info["path"], "bold"), f": {info['variant']} store, ", *state))
    console.print(
        f"features {tuple(info['shape'])} {info['dtype']}, chunks {tuple(info['chunks'])}, codec {info['codec']}"
    )
    console.print(
        f"{info['bytes_on_disk'] / 1e6:.1f} MB on disk; features {info['features_bytes_on_disk'] / 1e6:.1f} MB, "
        f"compression {info['compression_ratio']:.2f}x"
    )
    params = ", ".join(f"{k}={v}" for k, v in info["params"].items() if k != "variant")
    console.print(f"parameters: {params}")
    ds = info.get("dataset", {})
    console.print(f"dataset: {ds.get('name')} from {ds.get('source_root')}")
    console.print(f"{len(info['classes'])} classes: {', '.join(info['classes'])}")
    console.print(
        f"decoded clips: {info['decoded']} of {info['shape'][0]}; "
        + ", ".join(f"{k} {v}" for k, v in info["per_split"].items())
    )
    console.print(f"skipped files: {len(info['skipped'])}")
    for path, reason in sorted(info["skipped"].items())[:20]:
        console.print(f"  {path}: {reason}")


def print_evaluation(r: dict, console) -> None:
    from rich.table import Table
    from rich.text import Text

    console.print(
        Text.assemble((r["split"], "bold"), f": {r['n']} clips, loss {r['loss']:.4f}, accuracy {r['acc']:.4f}")
    )
    table = Table(title="per-class accuracy", title_justify="left")
    table.add_column("class")
    table.add_column("acc", justify="right")
    for c, a in r["per_class_acc"].items():
        table.add_row(c, "-" if a is None else f"{a:.3f}")
    console.print(table)
    if r["most_confused"]:
        console.print(
            "most confused (true -> predicted: count): "
            + ", ".join(f"{t} -> {p}: {n}" for t, p, n in r["most_confused"])
        )
