"""The docs' worked example (issue 25), docs/examples/wake_word.sh, run end to end on small sizes: a phrase
synthesized at 1.5 s with rooms and noise, negatives from the real mini tree in one manifest, the kws
recipe on --keywords, stream build and eval, the ONNX export of 24,000 samples, listen on a recording."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "examples" / "wake_word.sh"


@pytest.mark.slow
def test_the_wake_word_example_runs(tmp_path, mini_root, espeak):
    import onnxruntime as ort

    env = os.environ | {
        "BIN": str(Path(sys.executable).parent), "WORK": str(tmp_path / "wake"), "NEGATIVES": str(mini_root),
        "VOICES": "20", "EPOCHS": "2", "MINUTES": "1", "OMP_NUM_THREADS": "2",
    }  # fmt: skip
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    work = tmp_path / "wake"
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["classes"] == ["_silence_", "_unknown_", "hey computer"]
    session = ort.InferenceSession(str(work / "run" / "best.onnx"))
    assert session.get_inputs()[0].shape == ["batch", 24000]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["input"])["clip_seconds"] == 1.5
    assert (work / "run" / "streaming.json").is_file() and "FA/h" in r.stdout
    assert "recording.wav: 6.0 s" in r.stdout  # listen read the recording that holds the phrase
