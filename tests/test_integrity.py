"""Store integrity: checksummed chunks, protected attributes, a fingerprinted tree, complete metadata,
creation that survives a kill at any write, `speechcls verify`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import FeatureParams
from speechcls.featurize import featurize
from speechcls.loader import FeatureLoader
from speechcls.store import DamagedStore, reader
from speechcls.store.location import open_group

from helpers import SMALL_MEL, copy_tree

runner = CliRunner()
DIE_AT_WRITE = Path(__file__).with_name("die_at_write.py")
TIMING = ("seconds", "clips_per_s")  # the only attributes two runs may differ in


def make(tree, out, **kw):
    """The small store's featurize, as a library call (the same settings every time)."""
    kw = {"backend": "torch", "device": "cpu", "chunk_rows": 16, "batch_size": 32} | kw
    return featurize(FeatureParams("mel", **SMALL_MEL), tree, out=out, **kw)


def objects(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def assert_identical(a: Path, b: Path) -> None:
    """Every object byte for byte, the group's zarr.json but for the timing attributes."""
    oa, ob = objects(a), objects(b)
    assert sorted(oa) == sorted(ob)
    for key in oa:
        if key == "zarr.json":
            ja, jb = json.loads(oa[key]), json.loads(ob[key])
            for j in (ja, jb):
                for t in TIMING:
                    j["attributes"].pop(t, None)
            assert ja == jb
        else:
            assert oa[key] == ob[key], key


@pytest.fixture(scope="module")
def original(words10_tree, tmp_path_factory):
    return make(words10_tree, tmp_path_factory.mktemp("integrity") / "mel.zarr").store


@pytest.fixture
def copy(original, tmp_path):
    out = tmp_path / "mel.zarr"
    shutil.copytree(original, out)
    return out


def flip(path: Path, offset: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_labels_is_damage_and_featurize_repairs_it(copy, original, words10_tree):
    flip(copy / "label" / "c" / "0")  # class 22 -> 23 trained silently before chunks were checksummed
    with pytest.raises(DamagedStore, match="label array fails its checksum"):
        FeatureLoader(copy, "train", device="cpu")
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 1 and "chunk(s) of label fail their checksum: label/c/0" in r.output, r.output
    fixed = make(words10_tree, copy)
    assert fixed.status == "repaired"
    assert_identical(original, copy)
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 0


@pytest.mark.parametrize("mode", ["device", "stream"])
def test_flipped_or_foreign_feature_bytes_stop_the_read_naming_the_chunk(copy, original, words10_tree, mode):
    flip(copy / "features" / "c" / "1" / "0" / "0" / "0", offset=100)
    (copy / "features" / "c" / "3" / "0" / "0" / "0").write_bytes(os.urandom(64))  # was a blosc traceback
    with pytest.raises(DamagedStore, match=r"chunk features/c/[13]/0/0/0 fails its checksum"):
        loader = FeatureLoader(copy, "train", batch_size=16, device="cpu", mode=mode)
        for _ in loader:
            pass
    r = runner.invoke(app, ["verify", str(copy)])
    assert r.exit_code == 1 and "2 chunk(s) of features" in r.output
    assert make(words10_tree, copy).status == "repaired"
    assert_identical(original, copy)


@pytest.mark.parametrize(
    "edit,key",
    [
        (lambda a: a.update(variant="spectrogram"), "variant"),
        (lambda a: a["params"].update(n_fft=1024), "params"),
        (lambda a: a["params"].update(hop_length=100), "params"),
        (lambda a: a.update(classes=a["classes"][::-1]), "classes"),
    ],
)
def test_an_edited_attribute_is_found_when_the_store_is_opened(copy, edit, key):
    group = open_group(copy, mode="r+")
    attrs = dict(group.attrs)
    edit(attrs)
    group.attrs.put(attrs)
    with pytest.raises(DamagedStore, match=f"attributes {key} were edited"):
        reader.open_store(copy)
    r = runner.invoke(app, ["train", "--store", str(copy), "--device", "cpu", "--epochs", "1"])
    assert r.exit_code == 1 and "were edited" in r.output and "Traceback" not in r.output
    assert runner.invoke(app, ["verify", str(copy)]).exit_code == 1


@pytest.mark.parametrize("array", ["label", "features"])
def test_a_store_missing_an_arrays_metadata_is_damaged_and_says_which(copy, words10_tree, array):
    (copy / array / "zarr.json").unlink()
    for call in (lambda: reader.open_store(copy), lambda: reader.store_info(copy), lambda: make(words10_tree, copy)):
        with pytest.raises(DamagedStore, match=f"lacks the metadata of {array}"):
            call()
    r = runner.invoke(app, ["info", str(copy)])
    assert r.exit_code == 1 and f"lacks the metadata of {array}" in r.output


def test_a_tree_changed_after_featurize_is_noticed(words10_tree, tmp_path):
    tree = copy_tree(words10_tree, tmp_path / "tree")
    store = make(tree, tmp_path / "s.zarr").store
    assert make(tree, store).status == "present"
    assert runner.invoke(app, ["verify", str(store), "--root", str(tree)]).exit_code == 0
    # a clip moved into the validation list: the old split would be served as "already complete"
    clip = next(p for p in sorted((tree / "bed").glob("*.wav")))
    listed = (tree / "validation_list.txt").read_text()
    (tree / "validation_list.txt").write_text(listed + f"bed/{clip.name}\n")
    with pytest.raises(ValueError, match="differs in: tree"):
        make(tree, store)
    r = runner.invoke(app, ["verify", str(store), "--root", str(tree)])
    assert r.exit_code == 1 and "not the one the store was made from" in r.output
    (tree / "validation_list.txt").write_text(listed)
    assert make(tree, store).status == "present"
    # one WAV's audio replaced by another clip's
    other = next(p for p in sorted((tree / "cat").glob("*.wav")))
    shutil.copy(other, clip)
    with pytest.raises(ValueError, match="differs in: tree"):
        make(tree, store)
    r = runner.invoke(app, ["verify", str(store), "--root", str(tree)])
    assert r.exit_code == 1 and f"1 clip(s) whose audio bytes changed since featurize: bed/{clip.name}" in r.output
    (tree / "cat" / "extra_nohash_0.wav").write_bytes(other.read_bytes())
    r = runner.invoke(app, ["verify", str(store), "--root", str(tree)])
    assert "1 clip(s) in the tree but not in the store: cat/extra_nohash_0.wav" in r.output
    assert make(tree, store, overwrite=True).status == "written"


def _run_until_write(n: int, tree: Path, out: Path) -> subprocess.CompletedProcess:
    args = ["featurize", "--variant", "mel", "--n-mels", "80", "--hop-length", "200", "--root", str(tree),
            "--out", str(out), "--backend", "torch", "--device", "cpu", "--chunk-rows", "16",
            "--batch-size", "32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(DIE_AT_WRITE), str(n), *args], capture_output=True, text=True, env=env)


def kill_points(total: int) -> list[int]:
    """Every write index with SPEECHCLS_FULL_SWEEP=1; else a sample: each write of creation's first
    objects, the one that marks it created, the first blocks, the last write."""
    if os.environ.get("SPEECHCLS_FULL_SWEEP"):
        return list(range(1, total + 1))
    return sorted({1, 2, 3, 5, 8, 12, 15, 16, 17, total // 2, total - 1, total})


@pytest.mark.slow
def test_a_kill_at_any_write_then_the_same_command_gives_the_identical_store(words10_tree, original, tmp_path):
    """kill -9 just before write n of featurize (creation's every metadata object, every chunk, the
    completion), then the same command again: the store equals an uninterrupted one. SPEECHCLS_FULL_SWEEP=1
    runs every n (60 runs for this store); CI runs a sample."""
    counted = _run_until_write(0, words10_tree, tmp_path / "count.zarr")
    assert counted.returncode == 0, counted.stderr
    total = int(counted.stderr.rsplit("writes: ", 1)[1].split()[0])
    assert total > 20  # creation (~15 objects) and the blocks
    for n in kill_points(total):
        out = tmp_path / f"k{n}.zarr"
        killed = _run_until_write(n, words10_tree, out)
        assert killed.returncode == -9, (n, killed.stderr[-500:])
        again = _run_until_write(total + 10, words10_tree, out)  # the same command, not killed this time
        assert again.returncode == 0, (n, again.stderr[-800:])
        assert_identical(original, out)
        shutil.rmtree(out)


def test_verify_passes_a_good_store_and_reads_every_chunk(original, words10_tree):
    r = runner.invoke(app, ["verify", str(original), "--root", str(words10_tree)])
    assert r.exit_code == 0 and ": ok:" in r.output, r.output
    chunks = sum(1 for k in objects(original) if "/c/" in k)
    assert f"{chunks} chunks" in r.output
    assert np.array_equal(reader.read_all(open_group(original, mode="r"), "label").shape, (100,))


def test_a_second_featurize_on_a_store_being_written_is_refused(copy, original, words10_tree):
    """The first holds the lock (as a running featurize does): a second one, with --overwrite too, is
    refused at once instead of doing the work twice or pulling the store from under the first."""
    from speechcls.store.guard import lock

    with lock(copy):
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=r"another featurize is writing this store \(pid \d+"):
                make(words10_tree, copy, overwrite=overwrite)
    assert_identical(original, copy)
    assert make(words10_tree, copy).status == "present"  # released: the next run goes ahead


def test_a_checkpoint_write_that_dies_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    """torch.save used to write last.pt in place: a kill or a full disk mid-write left half a file and no
    way to resume. Now the old file stays until the new one is whole on disk."""
    import torch

    from speechcls.engine import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    real_write = Path.write_bytes

    def dying_write(self, data):  # checkpoint.save serializes in memory, then writes the bytes
        real_write(self, bytes(data)[:100])  # half written ...
        raise OSError(28, "No space left on device")  # ... and the disk is full

    monkeypatch.setattr(Path, "write_bytes", dying_write)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    monkeypatch.setattr(Path, "write_bytes", real_write)
    kept = torch.load(path, weights_only=True)  # the bytes of the first save, whole (not a full checkpoint)
    assert kept["epoch"] == 1 and torch.equal(kept["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
