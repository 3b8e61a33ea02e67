"""The cache -> device loader: exactly once, determinism, identical modes, the waveform store."""

import numpy as np
import pytest
import torch

from speechcls.config import FeatureParams
from speechcls.data.tree import index_tree, random_split
from speechcls.dist import Rank
from speechcls.featurize import featurize
from speechcls.loader import FeatureLoader, batch_bounds, epoch_permutation, shard_bounds
from speechcls.store import find_store

from helpers import copy_tree, read_store

MODES = ["device", "host", "stream"]


@pytest.fixture(scope="module")
def stores(mini_root, tmp_path_factory):
    """mel and waveform stores of the 300 real clips plus one corrupt file (an invalid row)."""
    base = tmp_path_factory.mktemp("loader")
    tree = copy_tree(mini_root, base / "tree")
    (tree / "yes" / "deadbeef_nohash_0.wav").write_bytes(b"not audio")
    out = {}
    for v in ("mel", "waveform"):
        out[v] = featurize(
            FeatureParams(v), tree, out=base / f"{v}.zarr", backend="torch", device="cpu", chunk_rows=16, batch_size=32
        ).store
    return out


def row_keys(store_path):
    """Map each stored row's bytes to its row index, to identify what a batch holds."""
    s = read_store(store_path)
    return {s["features"][i].astype(np.float32).tobytes(): i for i in range(len(s["path"]))}, s


def rows_of(loader):
    keys, _ = row_keys(loader.loc)
    seen, sizes = [], []
    for x, y in loader:
        sizes.append(len(y))
        for xi in x.numpy():
            seen.append(keys[xi.astype(np.float32).tobytes()])
    return seen, sizes


def test_batch_bounds_merge_a_last_single_example():
    assert batch_bounds(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert batch_bounds(9, 3) == [(0, 3), (3, 6), (6, 9)]
    assert batch_bounds(1, 3) == [(0, 1)]
    assert sum(b - a for a, b in batch_bounds(257, 128)) == 257


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [7, 205, 256, 257, 301])
@pytest.mark.parametrize("batch_size", [3, 12, 128])
def test_shards_cover_every_example_once_with_equal_steps(n, batch_size, world):
    shards = [shard_bounds(n, batch_size, r, world) for r in range(world)]
    covered = sorted(i for shard in shards for a, b in shard for i in range(a, b))
    assert covered == list(range(n))  # the union is the epoch, exactly once, no padding
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    for step in zip(*shards):
        sizes = [b - a for a, b in step]
        assert min(sizes) >= 2 and max(sizes) - min(sizes) <= 1
    if world == 1:
        assert shards[0] == batch_bounds(n, batch_size)


def test_shards_refuse_too_few_examples():
    with pytest.raises(ValueError, match="two"):
        shard_bounds(5, 4, 0, 3)


@pytest.fixture(scope="module")
def coarse(stores, mini_root, tmp_path_factory):
    """The mel store again in chunks of 256 rows: two chunks, too coarse to give ranks their own."""
    base = tmp_path_factory.mktemp("coarse")
    return featurize(
        FeatureParams("mel"),
        mini_root,
        out=base / "mel.zarr",
        backend="torch",
        device="cpu",
        chunk_rows=256,
        batch_size=256,
    ).store


@pytest.mark.parametrize(
    "mode,chunks", [(m, "fine") for m in MODES] + [("stream", "coarse")]
)  # chunking: streaming only
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_see_the_split_exactly_once(stores, coarse, mode, world, chunks, monkeypatch):
    from speechcls.store import reader

    path = stores["mel"] if chunks == "fine" else coarse
    s = read_store(path)
    expected = np.flatnonzero(s["valid"] & (s["split"] == 0))
    loaders = [
        FeatureLoader(path, "train", batch_size=12, seed=2, mode=mode, rank=Rank(r, world)) for r in range(world)
    ]
    read_chunk, reads = reader.read_chunk, []
    monkeypatch.setattr(reader, "read_chunk", lambda loc, array, c: reads[-1].append(c) or read_chunk(loc, array, c))
    for epoch in (0, 1):
        seen, steps, reads[:] = [], [], []
        for loader in loaders:
            loader.set_epoch(epoch)
            reads.append([])
            rows, sizes = rows_of(loader)
            seen.append(rows)
            steps.append(sizes)
        if mode == "stream":
            every = sorted({r // (16 if chunks == "fine" else 256) for r in expected})  # chunks with train rows
            if chunks == "fine":  # each rank reads its own chunks: the store once over the ranks
                assert sorted(c for r in reads for c in r) == every
            else:  # fallback: every rank reads every chunk
                assert all(sorted(r) == every for r in reads)
        assert sum(map(len, seen)) == len(set().union(*map(set, seen)))  # no row on two ranks, none twice
        assert sorted(r for rows in seen for r in rows) == list(expected)  # 205 rows: uneven shards, no padding
        assert len({len(s) for s in steps}) == 1 and len(steps[0]) == len(loaders[0])  # equal step counts
        assert [sum(step) for step in zip(*steps)] == loaders[0].global_sizes
        assert min(min(s) for s in steps) >= 2


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    assert np.array_equal(epoch_permutation(50, 1, 2), epoch_permutation(50, 1, 2))
    assert not np.array_equal(epoch_permutation(50, 1, 2), epoch_permutation(50, 1, 3))
    assert not np.array_equal(epoch_permutation(50, 1, 2), epoch_permutation(50, 2, 2))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_every_example_exactly_once_and_invalid_rows_never(stores, mode, split):
    s = read_store(stores["mel"])
    expected = np.flatnonzero(s["valid"] & (s["split"] == {"train": 0, "validation": 1, "test": 2}[split]))
    assert (~s["valid"]).sum() == 1
    loader = FeatureLoader(stores["mel"], split, batch_size=12, seed=5, mode=mode)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen, sizes = rows_of(loader)
        assert sorted(seen) == list(expected)
        assert min(sizes) >= 2 and len(sizes) == len(loader)
    if split == "train":
        assert len(expected) == 205 and 205 % 12 == 1 and sizes[-1] == 13  # the last single example joined


@pytest.mark.parametrize("mode", MODES)
def test_batch_rows_name_the_store_rows_of_each_step(stores, mode):
    """What a training error names: the rows of step k of the current epoch, in batch order."""
    keys, _ = row_keys(stores["mel"])
    loader = FeatureLoader(stores["mel"], "train", batch_size=12, seed=5, mode=mode)
    loader.set_epoch(2)
    for k, (x, _y) in enumerate(loader):
        assert loader.batch_rows(k).tolist() == [keys[xi.astype(np.float32).tobytes()] for xi in x.numpy()]
    if mode == "stream":  # recorded as batches are streamed: a step of an epoch not yet streamed is not known
        loader.set_epoch(3)
        with pytest.raises(IndexError, match="step 0 of epoch 3 has not been streamed"):
            loader.batch_rows(0)


def test_labels_match_rows(stores):
    s = read_store(stores["mel"])
    keys, _ = row_keys(stores["mel"])
    for x, y in FeatureLoader(stores["mel"], "train", batch_size=50, mode="stream"):
        for xi, yi in zip(x.numpy(), y.tolist()):
            assert s["label"][keys[xi.tobytes()]] == yi


def test_resident_modes_give_identical_batches(stores):
    a = FeatureLoader(stores["mel"], "train", batch_size=16, seed=3, mode="device")
    b = FeatureLoader(stores["mel"], "train", batch_size=16, seed=3, mode="host")
    for epoch in (0, 4):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_order_depends_on_seed_and_epoch_only(stores):
    def order(mode, seed, epoch):
        loader = FeatureLoader(stores["mel"], "train", batch_size=16, seed=seed, mode=mode)
        loader.set_epoch(epoch)
        return rows_of(loader)[0]

    for mode in MODES:
        assert order(mode, 1, 0) == order(mode, 1, 0)  # determinism (streaming too)
        assert order(mode, 1, 0) != order(mode, 1, 1)
        assert order(mode, 1, 0) != order(mode, 2, 0)


def test_unshuffled_splits_come_in_store_order_in_every_mode(stores):
    orders = [rows_of(FeatureLoader(stores["mel"], "test", batch_size=7, mode=m))[0] for m in MODES]
    assert orders[0] == orders[1] == orders[2] == sorted(orders[0])


def test_random_split_uses_the_one_function_on_the_store_paths(stores):
    s = read_store(stores["mel"])
    codes = random_split(list(s["path"]), 11)
    for split, code in (("train", 0), ("validation", 1), ("test", 2)):
        loader = FeatureLoader(stores["mel"], split, split_kind="random", split_seed=11, batch_size=64, mode="device")
        assert sorted(rows_of(loader)[0]) == list(np.flatnonzero((codes == code) & s["valid"]))
    # and it is the index's random split, path for path
    tree = index_tree(s["attrs"]["dataset"]["source_root"])
    by_path = dict(zip(tree.paths, tree.split("random", 11)))
    assert all(by_path[p] == c for p, c in zip(s["path"], codes))


def test_waveform_store_reproduces_the_precomputed_variant(stores):
    a = FeatureLoader(stores["waveform"], "validation", batch_size=20, features="mel", mode="host")
    b = FeatureLoader(stores["mel"], "validation", batch_size=20, mode="host")
    assert a.item_shape == b.item_shape == (1, 128, 101)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(ya, yb)
        err = (xa - xb).abs().amax(dim=(1, 2, 3)) / xb.abs().amax(dim=(1, 2, 3))
        assert err.max() <= 1e-5  # 16-bit sources: the int16 cache is lossless


def test_features_option_needs_a_waveform_store(stores):
    with pytest.raises(ValueError, match="waveform store"):
        FeatureLoader(stores["mel"], "train", features="complex")


def test_find_store(tmp_path, stores, monkeypatch):
    import shutil

    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="featurize"):
        find_store(cache=cache)
    (cache / "tree").mkdir(parents=True)
    shutil.copytree(stores["mel"], cache / "tree" / "mel-x.zarr")
    assert find_store(cache=cache) == cache / "tree" / "mel-x.zarr"
    shutil.copytree(stores["waveform"], cache / "tree" / "waveform-y.zarr")
    with pytest.raises(ValueError, match="several") as e:
        find_store(cache=cache)
    assert "mel-x.zarr" in str(e.value) and "waveform-y.zarr" in str(e.value)
    assert find_store("waveform", cache=cache).name == "waveform-y.zarr"
    monkeypatch.setenv("SPEECHCLS_CACHE", str(cache))
    assert find_store("mel") == cache / "tree" / "mel-x.zarr"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_batches_equal_cpu_batches(stores, mode):
    a = FeatureLoader(stores["mel"], "train", batch_size=32, seed=1, mode=mode, device="cuda")
    b = FeatureLoader(stores["mel"], "train", batch_size=32, seed=1, mode=mode, device="cpu")
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.device.type == "cuda" and torch.equal(xa.cpu(), xb) and torch.equal(ya.cpu(), yb)


@pytest.mark.parametrize("mode", MODES)
def test_a_chunk_deleted_while_training_is_an_error_not_zeros(stores, tmp_path, mode):
    """zarr would read the lost chunk as zeros; the loader stops, naming it."""
    import shutil

    from speechcls.store import DamagedStore

    copy = tmp_path / "mel.zarr"
    shutil.copytree(stores["mel"], copy)
    loader = FeatureLoader(copy, "train", batch_size=16, device="cpu", mode=mode)  # opened whole
    (copy / "features" / "c" / "1" / "0" / "0" / "0").unlink()  # rows 16-31: train rows among them
    with pytest.raises(DamagedStore, match=r"features/c/1/0/0/0 is gone"):
        for _ in loader:
            pass
    with pytest.raises(DamagedStore, match="features: 1 of 19"):
        FeatureLoader(copy, "train", device="cpu", mode=mode)
