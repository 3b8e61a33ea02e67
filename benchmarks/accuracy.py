"""Accuracy per model x recipe on real speech, with the commands that reproduce every row.

    python benchmarks/accuracy.py [--fsdd DIR] [--rows seed:chapter,bcresnet-8:kws,bcresnet-8:kws:--cmn] [--epochs 30]
                                  [--options '--cmn'] [--seeds 0,1,2] [--tag NAME] [--quick]
                                  [--protocols speaker,utterance,mini,synth] [--selection] [--epochs-by mini:100]

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

Two more protocols, for `--protocols`: *mini* (the Speech Commands mini tree of ../shared, task words
with its official lists; no background recordings, so no noise mixing) and *synth* (`speechcls synth
--voices 40 --noise 0.05`, the demo's tree, made in the work folder; its official lists; the kws
recipe's noise mixing from its _background_noise_). `--selection`: every run's test (and validation)
accuracy of every selection rule (metrics.json's test_acc_by: best validation accuracy, best
validation loss, final weights, EMA, average of the last epochs), one training giving all of them, and
a summary per rule of mean (min-max) over the seeds.
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
    "mini": "the Speech Commands v0.01 mini tree, task words, its official lists",
    "synth": "speechcls synth --voices 40 --noise 0.05, task words, its official lists",
}
RULES = ("acc", "loss", "last", "ema", "swa")  # metrics.json's test_acc_by keys, in this order


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


def train_row(
    store: Path, model: str, recipe: str, epochs: int, out: Path, extra: list[str], seed: int = 0, reuse: bool = False
) -> dict:
    """One `speechcls train` and its numbers. `reuse`: a finished run already in `out` (a metrics.json) is
    read instead of trained again (an interrupted benchmark continues; its wall_s is then None)."""
    args = ["train", "--store", str(store), "--model", model, "--recipe", recipe, "--epochs", str(epochs)]
    args += ["--device", "cpu", "--out", str(out), *extra, "--seed", str(seed)]
    wall = None
    if reuse and (out / "metrics.json").is_file():
        command = shlex.join(["speechcls", *args])
    else:
        shutil.rmtree(out, ignore_errors=True)
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
        "kept_by": m.get("kept_by"), "test_acc_by": m.get("test_acc_by"), "valid_acc_by": m.get("valid_acc_by"),
        "epoch_by": m.get("epoch_by"), "swa_epochs": m.get("swa_epochs"), "ema_decay": m.get("ema_decay"),
        "test_samples": m.get("test_samples"),
    }  # fmt: skip


def _stat(v: list[float]) -> str:
    return f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})"


def selection_summary(results: list[dict]) -> list[dict]:
    """Per (data, model, recipe, options): every rule's test accuracy, mean (min-max) over the seeds, and
    the best rule's name (highest mean)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["data"], r["model"], r["recipe"], r["options"], r["epochs"]), []).append(r)
    out = []
    for (data, model, recipe, options, epochs), rs in groups.items():
        row = {"data": data, "model": model, "options": options, "epochs": epochs, "seeds": len(rs)}
        means = {}
        for rule in RULES:
            v = [r["test_acc_by"][rule] for r in rs if r["test_acc_by"].get(rule) is not None]
            row[rule] = _stat(v) if v else ""
            means[rule] = sum(v) / len(v) if v else -1
        row["best rule"] = max(means, key=means.get)
        out.append(row)
    return out


def rule_means(results: list[dict]) -> list[dict]:
    """Per rule: the mean over every (data, model) group of its mean over seeds, and how many groups it
    ties or beats the final weights on (mean over seeds)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["data"], r["model"], r["options"], r["epochs"]), []).append(r)
    per = {
        key: {rule: sum(r["test_acc_by"][rule] for r in rs) / len(rs) for rule in RULES} for key, rs in groups.items()
    }
    out = []
    for rule in RULES:
        means = [p[rule] for p in per.values()]
        beats = sum(p[rule] >= p["last"] - 1e-12 for p in per.values())
        worst = min(p[rule] - p["last"] for p in per.values())
        out.append({
            "rule": rule, "mean over groups": f"{sum(means) / len(means):.4f}",
            ">= final weights": f"{beats} of {len(per)}", "worst vs final": f"{worst:+.3f}",
        })  # fmt: skip
    return out


SUMMARY_COLS = ["data", "store", "model", "recipe", "options", "epochs", "seeds", "test_acc", "last_test_acc"]


def summary(results: list[dict]) -> list[dict]:
    """Per (data, model, recipe, options): mean (min-max) of both test accuracies over the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["data"], r.get("store"), r["model"], r["recipe"], r["options"], r["epochs"]), []).append(r)
    out = []
    for (data, store, model, recipe, options, epochs), rs in groups.items():
        row = {"data": data, "store": store, "model": model, "recipe": recipe, "options": options, "epochs": epochs,
               "seeds": len(rs)}  # fmt: skip
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
    ap.add_argument("--selection", action="store_true", help="every selection rule's accuracy (test_acc_by)")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --work instead of training again")
    ap.add_argument("--epochs-by", default="", help="per-protocol epochs, e.g. mini:100 (else --epochs)")
    ap.add_argument(
        "--chapter-variant", default="mel", help="the store the chapter's rows train on: mel (the book's) | "
        "spectrogram | complex",
    )  # fmt: skip
    ap.add_argument("--dtype", default="float32", help="that store's dtypes, each a row: float32,float16")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None, help="keep trees, stores and runs here")
    args = ap.parse_args()
    # model:recipe[:train options of this row alone], e.g. matchboxnet-3x1x64:kws:--cmn
    rows_spec = [(r.split(":", 2) + [""])[:3] for r in args.rows.split(",")]
    protocols = args.protocols.split(",")
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.quick:
        rows_spec, protocols, args.epochs, seeds = rows_spec[:1], protocols[:1], 2, seeds[:1]
    epochs_by = dict(kv.split(":") for kv in args.epochs_by.split(",") if kv)
    work = args.work or Path(tempfile.mkdtemp(prefix="speechcls-accuracy-"))
    results = []
    try:
        for protocol in protocols:
            if protocol == "mini":
                tree, data = args.mini, "mini/words"  # read-only: featurize only reads it
            elif protocol == "synth":
                tree, data = work / "synth-40", "synth/words"
                if not tree.exists():
                    speechcls("synth", "--out", str(tree), "--voices", "40", "--noise", "0.05")
            else:
                tree, data = fsdd_tree(args.fsdd, work / f"fsdd-{protocol}", protocol), f"fsdd/{protocol}"
            stores = {}
            dtypes = args.dtype.split(",")
            for variant, dtype in [("waveform", "int16")] + [(args.chapter_variant, d) for d in dtypes]:
                cast = [] if dtype in ("int16", "float32") else ["--dtype", dtype]
                stores[variant, dtype] = (
                    work / f"{data.split('/')[0]}-{protocol}-{variant}{'-' + dtype if cast else ''}.zarr"
                )
                if not stores[variant, dtype].exists():
                    speechcls("featurize", "--variant", variant, "--root", str(tree), "--out",
                              str(stores[variant, dtype]), *cast)  # fmt: skip
            epochs = int(epochs_by.get(protocol, args.epochs))
            jobs = [(r, d, s) for r in rows_spec for d in (dtypes if r[1] == "chapter" else ["int16"]) for s in seeds]
            for (model, recipe, options), dtype, seed in jobs:
                kind = (args.chapter_variant, dtype) if recipe == "chapter" else ("waveform", "int16")
                store = stores[kind]
                extra = ["--features", "mel"] if recipe == "kws" else []
                if recipe == "kws":
                    if protocol != "synth":  # no background recordings: no noise mixing (shift and masks stay)
                        extra += ["--noise-prob", "0"]
                    extra += shlex.split(args.options)
                extra += shlex.split(options)
                tag = "".join(c for c in options if c.isalnum() or c in "-.")
                on = "" if kind in (("mel", "float32"), ("waveform", "int16")) else "-" + "-".join(kind)
                out = work / "runs" / f"{protocol}-{model}-{recipe}{tag}{on}-seed{seed}"
                row = {"data": data, "seed": seed, "store": " ".join(kind)}
                row |= train_row(store, model, recipe, epochs, out, extra, seed, reuse=args.reuse)
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
        "data", "store", "model", "recipe", "options", "seed", "epochs", "best_epoch", "test_acc", "last_test_acc",
        "parameters",
        "macs", "train_samples_per_s",
    ]  # fmt: skip
    if args.selection:
        cols = ["data", "model", "seed", "epochs", "test_samples", "kept_by"]
        for r in results:
            for rule in RULES:
                r[f"test {rule}"] = r["test_acc_by"].get(rule)
                r[f"valid {rule}"] = r["valid_acc_by"].get(rule)
            r["epoch acc/loss"] = f"{r['epoch_by']['acc']}/{r['epoch_by']['loss']}"
        cols += [f"test {rule}" for rule in RULES] + [f"valid {rule}" for rule in RULES] + ["epoch acc/loss"]
        cols += ["swa_epochs", "ema_decay", "train_samples_per_s"]
    md = (
        md_table(results, cols)
        + (
            f"\n\nTest accuracy per rule, mean (min-max) over the seeds {args.seeds}:\n\n"
            + md_table(selection_summary(results), ["data", "model", "options", "epochs", "seeds", *RULES, "best rule"])
            + "\n\nPer rule over every (data, model) group (mean of the groups' means over seeds), and on how many "
            "groups its mean over seeds ties or beats the final weights':\n\n"
            + md_table(rule_means(results), ["rule", "mean over groups", ">= final weights", "worst vs final"])
            if args.selection
            else ""
        )
        + (f"\n\nOver the seeds {args.seeds}:\n\n{md_table(summary(results), SUMMARY_COLS)}" if len(seeds) > 1 else "")
        + "\n\n"
        + "\n".join(f"- {r['data']} {r['model']} {r['recipe']} seed {r['seed']}: `{r['command']}`" for r in results)
    )
    md += (
        "\n\ntest_acc: the kept weights (`--best-by`, the kws recipe's default unless a row's options set it); "
        "last_test_acc: the final weights (`speechcls evaluate <run>/last.pt`)"
    )
    if args.selection:
        md += (
            "\n\nRules (metrics.json's test_acc_by / valid_acc_by, all from one training): acc = the epoch of best "
            "validation accuracy; loss = of lowest validation loss; last = the final weights; ema = the exponential "
            "average of the weights, updated every step (decay `ema_decay`); swa = the equal average of the last "
            "`swa_epochs` epochs' weights, BatchNorm statistics recomputed over the training split without augmentation"
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
