"""Results that stay true: quick benchmarks never touch the committed numbers, every result file names
its command, the report names each row's data, predict shows the true label, one confusion file per
evaluation."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import TrainConfig

from helpers import copy_tree

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
QUICK = RESULTS / "quick"
runner = CliRunner()


def _committed_state() -> dict:
    """Every file under benchmarks/results but the quick scratch folder: bytes and mtime."""
    return {
        p: (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(RESULTS.rglob("*"))
        if p.is_file() and QUICK not in p.parents
    }


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import common

        yield common
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_a_quick_bench_leaves_the_committed_results_alone(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "tree", per_word=2)
    before = _committed_state()
    assert before, "benchmarks/results holds the committed numbers"
    started = {p: p.stat().st_mtime_ns for p in QUICK.glob("*")} if QUICK.is_dir() else {}
    r = runner.invoke(app, ["bench", "featurize", "--quick", "--root", str(tree)])
    assert r.exit_code == 0, r.output
    assert _committed_state() == before  # same files, same bytes, same mtimes
    written = {p for p in QUICK.glob("featurize-*") if started.get(p) != p.stat().st_mtime_ns}
    assert {p.suffix for p in written} == {".json", ".md"}, sorted(QUICK.glob("*"))
    data = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    assert data["run"]["repeats"] == 1 and data["run"]["quick"] is True
    assert "benchmarks/featurize.py" in data["run"]["command"] and "--quick" in data["run"]["command"]
    assert f"--root {tree}" in data["run"]["command"]
    md = next(p for p in written if p.suffix == ".md").read_text()
    assert "made by `python " in md and "quick run" in md and "1 repeat)" in md


def test_the_quick_folder_is_git_ignored_and_the_committed_results_are_not():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    assert ignored("benchmarks/results/quick/featurize-cpu2.json")
    assert not ignored("benchmarks/results/featurize-cpu2.json")


def test_result_files_name_their_command_and_repeats(common, tmp_path, monkeypatch):
    assert common.results_dir(None, quick=False) == RESULTS
    assert common.results_dir(None, quick=True) == QUICK
    assert common.results_dir(tmp_path, quick=True) == tmp_path  # an explicit --out is honoured
    monkeypatch.setattr(sys, "argv", ["benchmarks/featurize.py", "--root", "/data/my tree", "--repeats", "5"])
    stem = common.write_results("featurize", {"cpus": 2}, [{"a": 1}], "| a |", tmp_path, repeats=5, quick=False)
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["run"] == {
        "command": "python benchmarks/featurize.py --root '/data/my tree' --repeats 5",  # a shell line
        "repeats": 5,
        "quick": False,
    }
    assert data["results"] == [{"a": 1}] and data["machine"] == {"cpus": 2}
    md = stem.with_suffix(".md").read_text()
    assert "made by `python benchmarks/featurize.py --root '/data/my tree' --repeats 5` (full run, 5 repeats)" in md


def test_a_benchmark_says_what_it_does_before_its_first_timing(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "tree", per_word=2)
    args = ["--quick", "--root", str(tree), "--variants", "mel", "--engines", "torch/cpu", "--out", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "featurize.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == f"tree: {tree}"
    assert lines[1].startswith("featurizing mel: 60 clips")  # before the first (silent) timing


# --- runs: the report's data column, predict's true label, the confusion files ----------------------------


@pytest.fixture(scope="module")
def trained(small_store, tmp_path_factory):
    from speechcls.engine.fit import fit

    run = tmp_path_factory.mktemp("results") / "run"
    fit(TrainConfig(store=str(small_store()), device="cpu", batch_size=16, epochs=1), run)
    return run


def _copy_run(run: Path, dst: Path, store: str) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("*.pt"))
    for name in ("metrics.json", "config.json"):
        data = json.loads((dst / name).read_text())
        data["store"] = store
        (dst / name).write_text(json.dumps(data))
    return dst


def _synthetic_store(small_store, dst: Path, **dataset) -> Path:
    import zarr

    store = shutil.copytree(small_store(), dst)
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["dataset"] = group.attrs["dataset"] | dataset
    return store


def test_the_report_names_the_data_of_every_row(trained, small_store, tmp_path):
    from speechcls.report.html import html_report

    synth = _synthetic_store(small_store, tmp_path / "synth.zarr", name="synth_commands")
    runs = [
        trained,
        _copy_run(trained, tmp_path / "on_synth", str(synth)),
        _copy_run(trained, tmp_path / "store_gone", str(tmp_path / "deleted.zarr")),
    ]
    page = html_report(runs, tmp_path / "report.html").read_text()
    table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    head = re.findall(r"<th>(.*?)</th>", table)
    rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]]
    data = {r[0]: r[head.index("data")] for r in rows}
    assert head[:2] == ["run", "data"] and len(rows) == 3 + 3
    assert data["run"] == "tree"  # conftest's words10 tree of real clips, by its folder name
    assert data["on_synth"] == "synth_commands: synthetic (espeak-ng), not speech"
    assert data["store_gone"] == "unknown"
    chapter = [r for r in rows if r[0] == "chapter (R torch)"]
    assert [r[1] for r in chapter] == ["Speech Commands v0.01, random 60/20/20 (the chapter)"] * 3


def test_a_tree_written_by_synth_is_synthetic_whatever_its_name(small_store, tmp_path):
    from speechcls.data.synth import MARKER
    from speechcls.report.html import run_data

    tree = tmp_path / "my_words"
    tree.mkdir()
    (tree / MARKER).write_text("{}")
    store = _synthetic_store(small_store, tmp_path / "s.zarr", name="my_words", source_root=str(tree))
    assert run_data({"store": str(store)}, {}) == "my_words: synthetic (espeak-ng), not speech"
    assert run_data({}, {"store": str(small_store())}) == "tree"  # config's store where metrics has none
    assert run_data({}, {}) == "unknown"


def test_predict_shows_the_true_label_and_hit_or_miss(trained, words10_tree, tmp_path):
    clip = sorted((words10_tree / "bed").glob("*.wav"))[0]
    r = runner.invoke(app, ["predict", str(trained), str(clip), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    (first,) = json.loads(r.output)
    assert first["true"] == "bed" and first["hit"] == (first["top"][0]["label"] == "bed")
    top = first["top"][0]["label"]
    other = next(c for c in ("cat", "dog") if c != top)
    # the same clip under the predicted label's folder, another class's, and a folder that names no class
    files = []
    for folder in (top, other, "recordings"):
        (tmp_path / folder).mkdir()
        files.append(shutil.copy(clip, tmp_path / folder / "clip.wav"))
    (tmp_path / top / "broken.wav").write_bytes(b"not audio")
    files.append(tmp_path / top / "broken.wav")
    r = runner.invoke(app, ["predict", str(trained), *map(str, files), "--json", "--device", "cpu"])
    assert r.exit_code == 1  # one file failed; the others are still predicted
    results = json.loads(r.stdout)
    assert [(x["true"], x["hit"]) for x in results[:3]] == [(top, True), (other, False), (None, None)]
    assert set(results[3]) == {"file", "error"}  # an error entry: nothing predicted, nothing to compare
    r = runner.invoke(app, ["predict", str(trained), *map(str, files[:3]), "--device", "cpu"])
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and len(lines) == 3, r.output
    assert lines[0].startswith(f"{files[0]}: true {top}, hit | {top} ")
    assert lines[1].startswith(f"{files[1]}: true {other}, miss | {top} ")
    assert lines[2].startswith(f"{files[2]}: {top} ")  # no class folder: no true label shown


def test_one_confusion_file_per_evaluated_split(trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())

    def confusion_files() -> dict:
        return {p.name: list(csv.reader(p.open())) for p in run.glob("confusion*.csv")}

    files = confusion_files()
    assert set(files) == {"confusion_test.csv"}  # training's test evaluation
    assert [[int(v) for v in row[1:]] for row in files["confusion_test.csv"][1:]] == metrics["confusion"]
    (run / "confusion_test.csv").write_text("stale")
    r = runner.invoke(app, ["evaluate", str(run), "--split", "test", "--device", "cpu"])
    assert r.exit_code == 0 and "confusion_test.csv" in r.output, r.output
    files = confusion_files()
    assert set(files) == {"confusion_test.csv"}  # refreshed, not a second file with the same numbers
    assert [[int(v) for v in row[1:]] for row in files["confusion_test.csv"][1:]] == metrics["confusion"]
    for split in ("validation", "valid"):  # the chapter's name for the split is the same split, the same file
        r = runner.invoke(app, ["evaluate", str(run), "--split", split, "--device", "cpu"])
        assert r.exit_code == 0, r.output
    assert set(confusion_files()) == {"confusion_test.csv", "confusion_validation.csv"}
