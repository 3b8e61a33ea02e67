"""tools/demo_table.py, the table `make demo` ends with, on run folders trained for real: both recipes
from one waveform store of the synthetic tree (as the demo trains them), and a kws12 run for a test set
that differs."""

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from speechcls.config import FeatureParams
from speechcls.engine.fit import fit
from speechcls.engine.recipes import resolve
from speechcls.featurize import featurize
from speechcls.models import build_model

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "demo_table.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("demo_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo_table = _load_tool()


@pytest.fixture(scope="module")
def runs(synth_tree, tmp_path_factory):
    """chapter (seed CNN on mel computed from the waveform store), kws (matchboxnet), kws12 (matchboxnet):
    two epochs each."""
    base = tmp_path_factory.mktemp("demo-table")
    store = featurize(FeatureParams("waveform"), synth_tree, out=base / "w.zarr", backend="torch", device="cpu").store
    common = {"store": str(store), "epochs": 2, "batch_size": 16, "device": "cpu"}
    made = {}
    for name, recipe, given in (
        ("chapter", "chapter", {"features": "mel"}),
        ("kws", "kws", {"model": "matchboxnet-3x1x64"}),
        ("kws12", "kws", {"model": "matchboxnet-3x1x64", "task": "kws12"}),
    ):
        fit(resolve(recipe, common | given), base / name)
        made[name] = base / name
    return made


def _train_seconds(run: Path) -> float:
    with open(run / "log.csv", newline="") as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f) if r["set"] == "train")


def test_rows_are_the_runs_own_numbers(runs):
    rows = [demo_table.run_row(runs[n]) for n in ("chapter", "kws")]
    for row, name in zip(rows, ("chapter", "kws")):
        m = json.loads((runs[name] / "metrics.json").read_text())
        assert row["test_acc"] == m["test_acc"] and row["epochs"] == 2
        assert abs(row["train_s"] - _train_seconds(runs[name])) < 1e-9 and row["train_s"] > 0
    assert [(r["recipe"], r["model"]) for r in rows] == [("chapter", "seed"), ("kws", "matchboxnet-3x1x64")]
    classes = rows[0]["classes"]
    # the parameters a freshly built model of each kind has (the synthetic tree's input shapes)
    assert rows[0]["parameters"] == sum(p.numel() for p in build_model("seed", (1, 128, 101), classes).parameters())
    assert rows[1]["parameters"] == sum(
        p.numel() for p in build_model("matchboxnet-3x1x64", (1, 64, 101), classes).parameters()
    )
    assert demo_table.test_set_line(rows).startswith(f"every row: the same {rows[0]['test_samples']} test clips")


def test_a_metrics_json_without_parameters_counts_them_from_best_pt(runs, tmp_path):
    run = shutil.copytree(runs["kws"], tmp_path / "old")
    metrics = json.loads((run / "metrics.json").read_text())
    expected = metrics.pop("parameters")
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert demo_table.run_row(run)["parameters"] == expected


def test_another_task_is_said_to_be_another_test_set(runs):
    rows = [demo_table.run_row(runs[n]) for n in ("chapter", "kws12")]
    assert rows[1]["task"] == "kws12" and rows[1]["classes"] != rows[0]["classes"]
    line = demo_table.test_set_line(rows)
    assert line.startswith("the rows were tested on different test sets") and "task kws12" in line


def test_the_printed_table_and_the_script(runs):
    console = Console(record=True, width=200)
    rows = [demo_table.run_row(runs[n]) for n in ("chapter", "kws")]
    demo_table.print_table(rows, console)
    text = console.export_text()
    for r in rows:
        assert f"{r['parameters']:,}" in text and f"{r['test_acc']:.3f}" in text
    assert "matchboxnet-3x1x64" in text and "every row: the same" in text
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(runs["chapter"]), str(runs["kws"])], capture_output=True, text=True
    )
    assert done.returncode == 0 and "matchboxnet-3x1x64" in done.stdout
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(runs["kws"].parent / "none")], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "no such run folder" in missing.stderr


def test_demo_script_parses():
    subprocess.run(["bash", "-n", str(REPO / "tools" / "demo.sh")], check=True)


@pytest.mark.parametrize(
    "seconds, shown",
    [
        (None, "-"),
        (59.94, "59.9 s"),
        (60.0, "1 min 00 s"),
        (179.6, "3 min 00 s"),
        (179.4, "2 min 59 s"),
        (3601, "60 min 01 s"),
    ],
)
def test_durations_never_show_60_seconds(seconds, shown):
    assert demo_table.duration(seconds) == shown
