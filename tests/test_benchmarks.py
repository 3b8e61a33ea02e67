"""The benchmark scripts run and write well-formed results (speed itself is never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import copy_tree

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], check=True, capture_output=True, text=True, timeout=600)


def test_store_codecs_quick(tmp_path, mini_root):
    run("store_codecs.py", "--quick", "--repeats", "1", "--data", str(mini_root.parent), "--out", str(tmp_path))
    (result,) = tmp_path.glob("store_codecs-*.json")
    data = json.loads(result.read_text())
    assert data["machine"]["cpus"] >= 1 and data["machine"]["clips"] == 300
    assert {r["variant"] for r in data["results"]} == {"spectrogram", "mel", "complex", "waveform"}
    for r in data["results"]:
        assert r["ratio"] > 0.5 and r["write_MBps"] > 0 and r["read_MBps"] > 0
    assert "| variant |" in result.with_suffix(".md").read_text()


def test_featurize_benchmark_quick(tmp_path, mini_root):
    tree = copy_tree(mini_root, tmp_path / "tree", per_word=2)
    run("featurize.py", "--quick", "--root", str(tree), "--variants", "mel,waveform", "--engines", "torch/cpu", "--out", str(tmp_path))
    data = json.loads(next(tmp_path.glob("featurize-*.json")).read_text())
    ways = {(r["variant"], r["way"]) for r in data["results"]}
    assert ways == {(v, w) for v in ("mel", "waveform") for w in ("peer, num_workers=0", "speechcls featurize torch/cpu")}
    ours = [r for r in data["results"] if r["way"].startswith("speechcls")]
    assert all(r["clips_per_s"] > 0 and r["ratio_vs_peer"] > 0 for r in ours)


def test_make_tree_is_an_official_layout_tree(tmp_path):
    import soundfile as sf

    from speechcls.dataset import index_tree, speakers_by_split

    subprocess.run([sys.executable, str(REPO / "tools" / "make_tree.py"), "--out", str(tmp_path / "t"), "--clips", "95"], check=True, cwd=REPO)
    index = index_tree(tmp_path / "t")
    assert len(index.clips) == 95 and len(index.classes) == 30
    groups = speakers_by_split(index, index.split("official"))
    assert all(groups.values()) and not (groups["train"] & (groups["validation"] | groups["test"]))
    info = sf.info(tmp_path / "t" / index.paths[0])
    assert (info.samplerate, info.frames, info.channels) == (16000, 16000, 1)
