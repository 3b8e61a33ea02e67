"""The table `make demo` ends with: one row per run folder (recipe, model, parameters, epochs, test
accuracy, train time), read from the runs' own files, and a line saying whether the rows share a test set.

    python tools/demo_table.py RUN_DIR...

Parameters are metrics.json's (counted when the run started); a run whose metrics.json lacks them gets
them counted from its best.pt. Train time is the sum of log.csv's per-epoch training seconds: what the
recipe costs, without the validation passes and the test.
"""

from __future__ import annotations

import sys
from pathlib import Path


def run_row(run: str | Path) -> dict:
    """One run folder's row: recipe, model, parameters, epochs, test accuracy, train seconds, and the test
    set it was measured on (task, classes, clips)."""
    from speechcls.engine.run_dir import RunDir

    rd = RunDir(run)
    m = rd.read_metrics()  # first: names the folder and what is missing
    params = m.get("parameters")
    if params is None:  # metrics.json from before the complexity count: the model of best.pt
        from speechcls.engine.checkpoint import load_model

        model, _ = load_model(rd.path)
        params = sum(p.numel() for p in model.parameters())
    epochs = [r for r in rd.read_log() if r["set"] == "train"] if rd.has_log() else []
    seconds = [r["seconds"] for r in epochs if "seconds" in r]
    return {
        "run": str(rd.path),
        "recipe": m.get("recipe", "chapter"),
        "model": m.get("model", "seed"),
        "parameters": int(params),
        "epochs": m["epochs_run"],
        "test_acc": m["test_acc"],
        # a log.csv from before the seconds column has none: no time rather than a wrong one
        "train_s": sum(seconds) if epochs and len(seconds) == len(epochs) else None,
        "task": m.get("task", "words"),
        "classes": len(m["classes"]),
        "test_samples": m["test_samples"],
    }


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)  # whole seconds first: 179.6 s is 3 min 00 s, not 2 min 60 s
    return f"{minutes} min {rest:02d} s"


def test_set_line(rows: list[dict]) -> str:
    """Whether the accuracies are comparable: the same task and test clips in every row, or which differ."""
    sets = {(r["task"], r["classes"], r["test_samples"]) for r in rows}
    if len(sets) == 1:
        task, classes, n = sets.pop()
        return f"every row: the same {n} test clips (task {task}, {classes} classes, speakers unseen in training)"
    each = "; ".join(f"{r['recipe']} {r['model']}: task {r['task']}, {r['test_samples']} clips" for r in rows)
    return f"the rows were tested on different test sets, so their accuracies do not compare: {each}"


def print_table(rows: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="the demo's recipes", title_justify="left")
    for name, justify in (
        ("recipe", "left"),
        ("model", "left"),
        ("parameters", "right"),
        ("epochs", "right"),
        ("test accuracy", "right"),
        ("train time", "right"),
    ):
        table.add_column(name, justify=justify)
    for r in rows:
        table.add_row(
            r["recipe"],
            r["model"],
            f"{r['parameters']:,}",
            str(r["epochs"]),
            f"{r['test_acc']:.3f}",
            duration(r["train_s"]),
        )
    console.print(table)
    console.print(test_set_line(rows))
    console.print("train time: the training epochs' seconds (log.csv), without validation and test")


def main(argv: list[str]) -> int:
    from speechcls.cli.app import console

    if not argv:
        print("usage: python tools/demo_table.py RUN_DIR...", file=sys.stderr)
        return 2
    try:
        rows = [run_row(run) for run in argv]
    except ValueError as e:  # a folder that is not a finished run: one line, as the CLI says it
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_table(rows, console())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
