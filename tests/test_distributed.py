"""torchrun: ranks featurize disjoint chunk ranges of one store (gloo on the CPU)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import copy_tree, read_store
from speechcls import store


def torchrun(*args, env=None, check=True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "speechcls", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=check, env={**os.environ, **(env or {})})


def test_two_ranks_featurize_a_store_identical_to_one_process(mini_root, tmp_path):
    tree = copy_tree(mini_root, tmp_path / "tree")
    (tree / "yes" / "deadbeef_nohash_0.wav").write_bytes(b"garbage")  # a skipped row, on some rank
    args = ["featurize", "--variant", "mel", "--root", str(tree), "--device", "cpu", "--backend", "torch", "--batch-size", "32", "--chunk-rows", "16"]
    subprocess.run([sys.executable, "-m", "speechcls", *args, "--out", str(tmp_path / "one.zarr")], check=True, capture_output=True)
    r = torchrun(*args, "--out", str(tmp_path / "two.zarr"))
    assert r.stdout.count("301 clips, 1 skipped") == 1, r.stdout + r.stderr  # rank 0 alone reports
    one, two = read_store(tmp_path / "one.zarr"), read_store(tmp_path / "two.zarr")
    for name in ("features", "valid", "label", "split", "speaker", "path"):
        assert np.array_equal(one[name], two[name]), name
    chunks = [c for c in sorted((tmp_path / "one.zarr" / "features" / "c").rglob("*")) if c.is_file()]
    assert len(chunks) == 19
    for chunk in chunks:
        assert chunk.read_bytes() == (tmp_path / "two.zarr" / chunk.relative_to(tmp_path / "one.zarr")).read_bytes()
    assert two["attrs"]["complete"] and two["attrs"]["ranks"] == 2
    assert two["attrs"]["skipped"] == one["attrs"]["skipped"] and len(two["attrs"]["skipped"]) == 1
    store.open_store(tmp_path / "two.zarr")


def test_killed_ranks_leave_the_store_incomplete_and_a_rerun_finishes_it(mini_root, tmp_path):
    import signal
    import time

    import zarr

    args = ["featurize", "--variant", "complex", "--root", str(mini_root), "--device", "cpu", "--backend", "torch",
            "--batch-size", "2", "--chunk-rows", "2", "--out", str(tmp_path / "s.zarr")]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "speechcls", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # both ranks at work, then every process of the job killed at once
        try:
            if zarr.open_array(str(tmp_path / "s.zarr" / "done"), mode="r")[:].sum() >= 2:
                break
        except Exception:
            pass
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = zarr.open_array(str(tmp_path / "s.zarr" / "done"), mode="r")[:]
    assert 0 < done.sum() < len(done)
    with pytest.raises(store.IncompleteStore):
        store.open_store(tmp_path / "s.zarr")
    r = torchrun(*args)
    assert "300 clips" in r.stdout, r.stdout + r.stderr
    subprocess.run([sys.executable, "-m", "speechcls", *args[:-1], str(tmp_path / "one.zarr")], check=True, capture_output=True)
    a, b = read_store(tmp_path / "s.zarr"), read_store(tmp_path / "one.zarr")
    assert a["attrs"]["complete"] and np.array_equal(a["features"], b["features"])
