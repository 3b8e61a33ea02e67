"""torchrun (gloo, 2 CPU processes): ranks featurize disjoint chunk ranges of one store; ranks train with
DistributedDataParallel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechcls.store import IncompleteStore, reader

from helpers import WORDS10, copy_tree, read_store, torchrun

pytestmark = pytest.mark.dist  # every test here starts torchrun ranks

DIE_AFTER = Path(__file__).with_name("die_after.py")


def test_two_ranks_featurize_a_store_identical_to_one_process(mini_root, tmp_path):
    tree = copy_tree(mini_root, tmp_path / "tree")
    (tree / "yes" / "deadbeef_nohash_0.wav").write_bytes(b"garbage")  # a skipped row, on some rank
    args = [
        "featurize",
        "--variant",
        "mel",
        "--root",
        str(tree),
        "--device",
        "cpu",
        "--backend",
        "torch",
        "--batch-size",
        "32",
        "--chunk-rows",
        "16",
    ]
    subprocess.run(
        [sys.executable, "-m", "speechcls", *args, "--out", str(tmp_path / "one.zarr")], check=True, capture_output=True
    )
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
    reader.open_store(tmp_path / "two.zarr")


def test_killed_ranks_leave_the_store_incomplete_and_a_rerun_finishes_it(mini_root, tmp_path):
    import zarr

    args = ["featurize", "--variant", "complex", "--root", str(mini_root), "--device", "cpu", "--backend", "torch",
            "--batch-size", "2", "--chunk-rows", "2", "--out", str(tmp_path / "s.zarr")]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # each rank kills itself (SIGKILL) right after recording its 2nd block; the first death makes torchrun
    # stop the other rank, so 2 to 4 of the 150 blocks are done
    r = subprocess.run([*launcher, str(DIE_AFTER), "2", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    done = zarr.open_array(str(tmp_path / "s.zarr" / "done"), mode="r")[:]
    assert len(done) == 150 and 2 <= done.sum() <= 4, (done.sum(), r.stderr[-2000:])
    with pytest.raises(IncompleteStore):
        reader.open_store(tmp_path / "s.zarr")
    r = torchrun(*args)
    assert "300 clips" in r.stdout, r.stdout + r.stderr
    subprocess.run(
        [sys.executable, "-m", "speechcls", *args[:-1], str(tmp_path / "one.zarr")], check=True, capture_output=True
    )
    a, b = read_store(tmp_path / "s.zarr"), read_store(tmp_path / "one.zarr")
    assert a["attrs"]["complete"] and np.array_equal(a["features"], b["features"])


# --- DistributedDataParallel training ---------------------------------------------------------------

SCRIPT = Path(__file__).with_name("ddp_script.py")
WORDS = WORDS10


@pytest.fixture(scope="module")
def ddp_store(small_store):
    """10 words of the real clips, mel 80 x 81: 74 train rows (uneven shards at batch 16 x 2 ranks)."""
    return small_store()


@pytest.fixture(scope="module")
def ddp_store_fine(small_store):
    """The same rows in chunks of 8 (13 chunks): the streaming loader gives each rank its own chunks."""
    return small_store(chunk_rows=8)


def script(*args, ranks=2, check=True):
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
        if ranks > 1
        else [sys.executable]
    )
    r = subprocess.run(
        [*launcher, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_first_step_with_sync_batchnorm_equals_a_one_rank_step(ddp_store, tmp_path):
    import torch

    script("step", tmp_path / "one.pt", ddp_store, 32, "--no-dropout", ranks=1)  # the global batch in one process
    script("step", tmp_path / "sync.pt", ddp_store, 16, "--no-dropout", "--sync-bn")
    script("step", tmp_path / "local.pt", ddp_store, 16, "--no-dropout")
    one, sync, local = (torch.load(tmp_path / f"{n}.pt") for n in ("one", "sync", "local"))
    assert one["rows"] == sync["rows"] == 32
    scale = max(g.abs().max() for g in one["grads"].values())

    def worst(other):  # largest gradient difference, relative to the largest gradient
        return max((one["grads"][k] - other["grads"][k]).abs().max() for k in one["grads"]) / scale

    assert worst(sync) < 1e-3  # measured 1.8e-4: float32 sums in another order
    assert worst(local) > 5e-2  # per-rank statistics: visibly another step (measured 1.15)
    for k, v in one["state"].items():
        if "running" in k:  # BatchNorm statistics of the global batch
            torch.testing.assert_close(sync["state"][k], v, rtol=1e-5, atol=1e-6)


def _train_rows(store_path):
    import hashlib

    s = read_store(store_path)
    rows = np.flatnonzero(s["valid"] & (s["split"] == 0))
    return sorted(hashlib.sha1(s["features"][i].astype(np.float32).tobytes()).hexdigest() for i in rows)


def _seen(out):
    return [json.loads((out.parent / f"{out.name}-seen-rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("loader", ["device", "stream"])
def test_two_rank_training_sees_each_example_once_and_logs_what_one_process_would(
    ddp_store, ddp_store_fine, tmp_path, loader
):
    """device: global batches cut in two; stream: each rank reads its own chunks (batches 16 +- a few)."""
    from speechcls.engine.evaluate import evaluate
    from speechcls.engine.run_dir import read_log

    out = tmp_path / "run"
    store_path = ddp_store if loader == "device" else ddp_store_fine
    script("fit", out, store_path, 16, 3, "--loader", loader)
    expected = _train_rows(ddp_store)
    assert len(expected) == 74
    log = read_log(out / "log.csv")
    seen = _seen(out)
    for epoch in ("1", "2", "3"):
        rows = seen[0][epoch]["rows"] + seen[1][epoch]["rows"]
        assert sorted(rows) == expected  # the union is the split, each example once: no padding duplicates
        assert len(seen[0][epoch]["batches"]) == len(seen[1][epoch]["batches"]) == 3  # 32 + 32 + 10: equal steps
        batches = np.array(seen[0][epoch]["batches"] + seen[1][epoch]["batches"])
        train = next(r for r in log if r["epoch"] == int(epoch) and r["set"] == "train")
        assert train["loss"] == pytest.approx(batches[:, 0].sum() / 74, rel=1e-6)  # all-reduced over both ranks
        assert train["acc"] == pytest.approx(batches[:, 1].sum() / 74, abs=1e-12)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world"] == 2 and metrics["train_samples"] == 74
    alone = evaluate(out, "test", device="cpu")  # rank 0's best.pt evaluated by one process
    assert metrics["test_samples"] == alone["n"] == 14
    assert metrics["test_acc"] == pytest.approx(alone["acc"], abs=1e-12)
    assert metrics["test_loss"] == pytest.approx(alone["loss"], rel=1e-5)
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "config.json",
        "confusion_test.csv",
        "last.pt",
        "log.csv",
        "metrics.json",
    ]


def test_two_rank_training_resumes_where_it_stopped(ddp_store, tmp_path):
    from speechcls.engine.run_dir import read_log

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    script("fit", whole, ddp_store, 16, 3)
    r = script("fit", cut, ddp_store, 16, 3, "--stop-after", "1", check=False)
    assert r.returncode != 0 and "stopped after epoch 1" in r.stderr
    assert [row["epoch"] for row in read_log(cut / "log.csv")] == [1, 1]
    script("fit", cut, ddp_store, 16, 3, "--resume")
    a, b = read_log(whole / "log.csv"), read_log(cut / "log.csv")
    assert [(r["epoch"], r["set"]) for r in a] == [(r["epoch"], r["set"]) for r in b]
    for x, y in zip(a, b):  # dropout on: equal only if each rank got its own RNG state back
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6) and x["acc"] == y["acc"]
    assert _seen(cut)[1]["2"]["rows"] == _seen(whole)[1]["2"]["rows"]


def test_torchrun_speechcls_train(ddp_store, tmp_path):
    opts = "--device cpu --epochs 2 --batch-size 16 --sync-bn".split()
    r = torchrun("train", "--store", str(ddp_store), *opts, "--out", str(tmp_path / "run"))
    assert r.stdout.count("test loss") == 1 and "on 2 x cpu" in r.stdout, r.stdout + r.stderr  # rank 0 alone reports
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world"] == 2 and config["sync_bn"] and config["batch_size"] == 16


@pytest.mark.cuda
def test_torchrun_train_on_two_cuda_gpus_with_nccl(ddp_store, tmp_path):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices (NCCL refuses two ranks on one GPU)")
    opts = "--device cuda --epochs 2 --batch-size 16 --sync-bn".split()
    r = torchrun("train", "--store", str(ddp_store), *opts, "--out", str(tmp_path / "run"))
    assert r.stdout.count("test loss") == 1 and "on 2 x cuda" in r.stdout, r.stdout + r.stderr
