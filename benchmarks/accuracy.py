"""Accuracy per model x recipe on real speech, with the commands that reproduce every row.

    python benchmarks/accuracy.py [--fsdd DIR] [--rows seed:chapter,bcresnet-8:kws,bcresnet-8:kws:--cmn] [--epochs 30]
                                  [--options '--cmn'] [--seeds 0,1,2] [--tag NAME] [--quick]

FSDD (../shared/data/fsdd: 3,000 recordings of the digits, 6 speakers, 8 kHz) is arranged twice as a
Speech Commands tree with official lists (the clips resampled to 16 kHz by featurize):
- speaker: an unseen speaker as the test set (theo) and another as validation (nicolas), four to train;
- utterance: FSDD's own split, index 0-4 of every speaker and digit to test, 5-9 to validate.
Each tree is featurized once as a waveform store (the kws recipes compute log-mel on the device) and as a
mel store (the chapter's recipe trains on the stored mel, as the book does); then `speechcls train` runs
every row with `--epochs` (the published schedules are 200 epochs on 85,000 clips; the rows say how many
ran), once per seed of `--seeds` (a summary gives each row's mean and range over them: one FSDD speaker
is 500 clips, and seeds move its accuracy by several points). Every number comes from the run's
metrics.json, and the final weights' test accuracy from `evaluate` of last.pt. Also printed: the kws12
task's counts per split on the Speech Commands mini tree and on a synthetic tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, md_table, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
DIGITS = "zero one two three four five six seven eight nine".split()
PROTOCOLS = {
    "speaker": "test speaker theo, validation speaker nicolas, 4 speakers train",
    "utterance": "FSDD's split: index 0-4 test, 5-9 validation, 10-49 train",
}


def fsdd_tree(fsdd: Path, dst: Path, protocol: str) -> Path:
    """FSDD ({digit}_{speaker}_{index}.wav) in the Speech Commands layout, <word>/<speaker>_nohash_<index>.wav,
    with validation_list.txt and testing_list.txt for `protocol`."""
    lists: dict[str, list[str]] = {"validation": [], "test": []}
    for wav in sorted(fsdd.glob("*.wav")):
        digit, speaker, idx = wav.stem.split("_")
        rel = f"{DIGITS[int(digit)]}/{speaker}_nohash_{idx}.wav"
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wav, dst / rel)
        if protocol == "speaker":
            split = {"theo": "test", "nicolas": "validation"}.get(speaker)
        else:
            split = "test" if int(idx) < 5 else "validation" if int(idx) < 10 else None
        if split:
            lists[split].append(rel)
    (dst / "validation_list.txt").write_text("\n".join(sorted(lists["validation"])) + "\n")
    (dst / "testing_list.txt").write_text("\n".join(sorted(lists["test"])) + "\n")
    return dst


def speechcls(*args: str) -> str:
    """Run the CLI as a user would; returns the command line (for the results) after it succeeded."""
    cmd = [str(Path(sys.executable).parent / "speechcls"), *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return shlex.join(["speechcls", *args])


def train_row(store: Path, model: str, recipe: str, epochs: int, out: Path, extra: list[str], seed: int = 0) -> dict:
    args = ["train", "--store", str(store), "--model", model, "--recipe", recipe, "--epochs", str(epochs)]
    args += ["--device", "cpu", "--out", str(out), *extra, "--seed", str(seed)]
    t = time.perf_counter()
    command = speechcls(*args)
    wall = time.perf_counter() - t
    m = json.loads((out / "metrics.json").read_text())
    # the final weights too (`speechcls evaluate <run>/last.pt`): with one validation speaker the
    # best-by-validation epoch is chosen on a speaker unlike the test one, and `--best-by last` keeps these
    from speechcls.engine.evaluate import evaluate

    last = evaluate(out / "last.pt", "test", device="cpu")["acc"]
    return {
        "model": model, "recipe": recipe, "options": " ".join(extra), "epochs": m["epochs_run"],
        "best_epoch": m["best_epoch"], "test_acc": m["test_acc"], "last_test_acc": last,
        "best_valid_acc": m.get("best_valid_acc"), "parameters": m.get("parameters"),
        "macs": m.get("macs"), "train_samples_per_s": m["train_samples_per_s"], "wall_s": wall, "command": command,
    }  # fmt: skip


SUMMARY_COLS = ["data", "model", "recipe", "options", "epochs", "seeds", "test_acc", "last_test_acc"]


def summary(results: list[dict]) -> list[dict]:
    """Per (data, model, recipe, options): mean (min-max) of both test accuracies over the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["data"], r["model"], r["recipe"], r["options"], r["epochs"]), []).append(r)
    out = []
    for (data, model, recipe, options, epochs), rs in groups.items():
        row = {"data": data, "model": model, "recipe": recipe, "options": options, "epochs": epochs, "seeds": len(rs)}
        for k in ("test_acc", "last_test_acc"):
            v = [r[k] for r in rs]
            row[k] = f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})"
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fsdd", type=Path, default=SHARED / "fsdd")
    ap.add_argument("--mini", type=Path, default=SHARED / "speech_commands_v0.01_mini")
    ap.add_argument("--rows", default="seed:chapter,seed:kws,bcresnet-3:kws,bcresnet-8:kws,matchboxnet-3x1x64:kws")
    ap.add_argument("--protocols", default="speaker,utterance")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--options", default="", help="train options added to every kws row, e.g. '--speed 0.1'")
    ap.add_argument("--seeds", default="0", help="train every row once per seed (comma-separated)")
    ap.add_argument("--tag", default="", help="results as accuracy-<tag>-<machine>.md (another set of rows)")
    ap.add_argument("--quick", action="store_true", help="2 epochs, one row, one protocol: a smoke run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="keep trees, stores and runs here")
    args = ap.parse_args()
    # model:recipe[:train options of this row alone], e.g. matchboxnet-3x1x64:kws:--cmn
    rows_spec = [(r.split(":", 2) + [""])[:3] for r in args.rows.split(",")]
    protocols = args.protocols.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.quick:
        rows_spec, protocols, args.epochs, seeds = rows_spec[:1], protocols[:1], 2, seeds[:1]
    work = args.work or Path(tempfile.mkdtemp(prefix="speechcls-accuracy-"))
    results = []
    try:
        for protocol in protocols:
            tree = fsdd_tree(args.fsdd, work / f"fsdd-{protocol}", protocol)
            stores = {}
            for variant in ("waveform", "mel"):
                stores[variant] = work / f"fsdd-{protocol}-{variant}.zarr"
                if not stores[variant].exists():
                    speechcls("featurize", "--variant", variant, "--root", str(tree), "--out", str(stores[variant]))
            for (model, recipe, options), seed in ((r, s) for r in rows_spec for s in seeds):
                store = stores["mel"] if recipe == "chapter" else stores["waveform"]
                extra = ["--features", "mel"] if recipe == "kws" else []
                if recipe == "kws":  # FSDD has no background recordings: no noise mixing (shift and masks stay)
                    extra += ["--noise-prob", "0", *shlex.split(args.options)]
                extra += shlex.split(options)
                tag = "".join(c for c in options if c.isalnum() or c in "-.")
                out = work / "runs" / f"{protocol}-{model}-{recipe}{tag}-seed{seed}"
                shutil.rmtree(out, ignore_errors=True)
                row = {"data": f"fsdd/{protocol}", "seed": seed}
                row |= train_row(store, model, recipe, args.epochs, out, extra, seed)
                results.append(row)
                print(json.dumps(row), flush=True)
        try:
            counts = kws12_counts(args.mini, work)
        except (subprocess.CalledProcessError, ValueError) as e:  # the accuracy rows are kept either way
            counts = f"kws12 counts not printed: {e}"
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    info = machine()
    cols = [
        "data", "model", "recipe", "options", "seed", "epochs", "best_epoch", "test_acc", "last_test_acc", "parameters",
        "macs", "train_samples_per_s",
    ]  # fmt: skip
    md = (
        md_table(results, cols)
        + (f"\n\nOver the seeds {args.seeds}:\n\n{md_table(summary(results), SUMMARY_COLS)}" if len(seeds) > 1 else "")
        + "\n\n"
        + "\n".join(f"- {r['data']} {r['model']} {r['recipe']} seed {r['seed']}: `{r['command']}`" for r in results)
    )
    md += (
        "\n\ntest_acc: the checkpoint with the best validation accuracy (the kws recipe's); last_test_acc: the final "
        "weights (`--best-by last`)"
    )
    md += "\n\nProtocols: " + "; ".join(f"{k}: {v}" for k, v in PROTOCOLS.items()) + "\n\n" + counts
    print(md)
    name = "accuracy" + (f"-{args.tag}" if args.tag else "")
    write_results(name, info, results, md, args.out, repeats=1, quick=args.quick)


def kws12_counts(mini: Path, work: Path) -> str:
    """`speechcls data info --task kws12` on the mini tree and on a small synthetic tree, as printed."""
    synth = work / "synth"
    if not synth.exists():
        speechcls("synth", "--out", str(synth), "--voices", "4")
    parts = []
    for root in (mini, synth):
        cmd = [str(Path(sys.executable).parent / "speechcls"), "data", "info", "--root", str(root), "--task", "kws12"]
        cmd.append("--no-check-audio")
        env = os.environ | {"COLUMNS": "160"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        out = out[out.index("task kws12") :]  # the task's table (data info prints the tree's first)
        parts.append(f"`{shlex.join(['speechcls', *cmd[1:]])}`:\n\n```\n{out.strip()}\n```")
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
