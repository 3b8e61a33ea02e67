"""The benchmark scripts run and write well-formed results (speed itself is never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_tree

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_store_codecs_quick(tmp_path, mini_root):
    run("store_codecs.py", "--quick", "--repeats", "1", "--data", str(mini_root.parent), "--out", str(tmp_path))
    (result,) = tmp_path.glob("store_codecs-*.json")
    data = json.loads(result.read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["clips"] == 300
    assert {r["variant"] for r in data["results"]} == {"spectrogram", "mel", "complex", "waveform"}
    for r in data["results"]:
        assert r["ratio"] > 0.5 and r["write_MBps"] > 0 and r["read_MBps"] > 0
    assert "| variant |" in result.with_suffix(".md").read_text()


@pytest.mark.slow
def test_featurize_benchmark_quick(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "tree", per_word=2)
    run(
        "featurize.py",
        "--quick",
        "--root",
        str(tree),
        "--variants",
        "mel,waveform",
        "--engines",
        "torch/cpu",
        "--out",
        str(tmp_path),
    )
    data = json.loads(next(tmp_path.glob("featurize-*.json")).read_text())
    ways = {(r["variant"], r["way"]) for r in data["results"]}
    assert ways == {
        (v, w) for v in ("mel", "waveform") for w in ("peer, num_workers=0", "speechcls featurize torch/cpu")
    }
    ours = [r for r in data["results"] if r["way"].startswith("speechcls")]
    assert all(r["clips_per_s"] > 0 and r["ratio_vs_peer"] > 0 for r in ours)
    assert data["run"]["quick"] is True and data["run"]["repeats"] == 1  # a smoke run says so


def test_make_tree_is_an_official_layout_tree(tmp_path):
    import soundfile as sf

    from speechcls.data.tree import index_tree, speakers_by_split

    subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_tree.py"), "--out", str(tmp_path / "t"), "--clips", "95"],
        check=True,
        cwd=REPO,
    )
    index = index_tree(tmp_path / "t")
    assert len(index.clips) == 95 and len(index.classes) == 30
    groups = speakers_by_split(index, index.split("official"))
    assert all(groups.values()) and not (groups["train"] & (groups["validation"] | groups["test"]))
    info = sf.info(tmp_path / "t" / index.paths[0])
    assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)


@pytest.mark.slow
def test_train_step_quick(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "tree", per_word=4)
    run("train_step.py", "--quick", "--root", str(tree), "--variants", "mel", "--device", "cpu", "--out", str(tmp_path))
    data = json.loads(next(tmp_path.glob("train_step-*.json")).read_text())
    ways = [r["way"] for r in data["results"]]
    assert ways[0] == "device tensors" and ways[1].startswith("speechcls loader") and ways[2] == "peer, num_workers=0"
    assert data["results"][0]["input_overhead_pct"] == 0
    assert all(r["samples_per_s"] > 0 for r in data["results"])


@pytest.mark.slow
def test_input_pipeline_quick(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "tree", per_word=4)
    run(
        "input_pipeline.py",
        "--quick",
        "--root",
        str(tree),
        "--variants",
        "mel",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    )
    data = json.loads(next(tmp_path.glob("input_pipeline-*.json")).read_text())
    ways = [r["way"] for r in data["results"]]
    assert ways == ["peer, num_workers=0", "speechcls device", "speechcls host", "speechcls stream",
                    "speechcls waveform device + on-device", "speechcls waveform host + on-device",
                    "speechcls waveform stream + on-device"]  # fmt: skip
    n = data["machine"]["train_clips"]
    for r in data["results"]:
        assert r["samples"] == n and r["samples_per_s"] > 0
        assert r["GB_per_s"] * 1e9 / r["samples_per_s"] == pytest.approx(128 * 101 * 4, rel=1e-6)  # float32 mel
    assert all(r["ratio_vs_peer"] > 0 for r in data["results"][1:])


@pytest.mark.slow
def test_speechcls_bench_runs_the_scripts_and_prints_ratios(tmp_path, mini_root):
    from typer.testing import CliRunner

    from speechcls.cli import app

    tree = copy_tree(mini_root, tmp_path / "tree", per_word=2)
    r = CliRunner().invoke(app, ["bench", "featurize", "--quick", "--root", str(tree), "--out", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    assert list((tmp_path / "res").glob("featurize-*.json"))  # a quick run given --out writes there
    assert "speechcls bench" in r.output and "vs peer" in r.output
    bad = CliRunner().invoke(app, ["bench", "nonsense"])
    assert bad.exit_code == 1 and "unknown benchmark" in bad.output


def test_gpu_check_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], check=True)
    subprocess.run(["bash", "-n", str(REPO / "tools" / "gpu_wheels.sh")], check=True)


@pytest.mark.slow
def test_stream_ranks_quick(tmp_path, mini_root):
    run(
        "stream_ranks.py",
        "--quick",
        "--root",
        str(mini_root),
        "--variants",
        "mel",
        "--worlds",
        "2",
        "--chunk-rows",
        "16",
        "--batch-size",
        "16",
        "--out",
        str(tmp_path),
    )
    data = json.loads(next(tmp_path.glob("stream_ranks-*.json")).read_text())
    every, own = data["results"]
    assert every["ranks_read"] == "every chunk" and own["ranks_read"] == "own chunks"
    assert own["chunks_per_rank"] == every["chunks_per_rank"] / 2  # the two ranks share the chunks
    assert every["train_rows"] == own["train_rows"] and own["speedup"] > 0
