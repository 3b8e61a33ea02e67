"""Stores at fsspec URLs: featurize, resume, distributed featurize, info and train against a local S3
server (moto's server mode on 127.0.0.1, started here), credentials and endpoint from the environment."""

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import FeatureParams, TrainConfig
from speechcls.featurize import featurize
from speechcls.store import DamagedStore, IncompleteStore, location, reader

from helpers import SMALL_MEL, WORDS10, InterruptAfter, read_store, torchrun

pytestmark = pytest.mark.slow  # an S3 server (moto) for the module

WORDS = WORDS10
SMALL = SMALL_MEL
# the CLI's featurize for conftest's small store (mel, 80 filters, hop 200)
FEATURIZE_SMALL = [
    "featurize",
    "--variant",
    "mel",
    "--n-mels",
    "80",
    "--hop-length",
    "200",
    "--device",
    "cpu",
    "--backend",
    "torch",
]


@pytest.fixture(scope="module")
def s3():
    """An S3 endpoint on 127.0.0.1 with a fresh bucket; AWS_* set the way a user would set them."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("speech")
    yield "s3://speech"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def tree(words10_tree):
    return words10_tree


@pytest.fixture(scope="module")
def local(small_store):
    """The 10-word mel store on local disk in chunks of 16: what every S3 store here must equal."""
    return small_store(chunk_rows=16)


def objects(url: str) -> dict[str, bytes]:
    """Every object under the URL, by key relative to it."""
    fs, root = location._fs(url)
    return {k[len(root) + 1 :]: fs.cat_file(k) for k in fs.find(root)}


def assert_same_store(url: str, local_path) -> None:
    remote, here = (
        objects(url),
        {str(p.relative_to(local_path)): p.read_bytes() for p in local_path.rglob("*") if p.is_file()},
    )
    chunks = sorted(k for k in here if k.startswith("features/c/"))
    assert len(chunks) == 7  # 100 rows in chunks of 16
    for k in chunks:
        assert remote[k] == here[k], k  # byte for byte
    a, b = reader.open_store(url), reader.open_store(local_path)
    for name in ("valid", "label", "split", "path", "skip_reason"):
        assert np.array_equal(a[name][:], b[name][:]), name


def test_featurize_into_s3_equals_a_local_store(s3, tree, local):
    url = f"{s3}/one/mel.zarr"
    r = featurize(FeatureParams("mel", **SMALL), tree, out=url, backend="torch", device="cpu", chunk_rows=16)
    assert r.store == url and r.clips == 100 and r.status == "written"
    assert_same_store(url, local)
    again = featurize(FeatureParams("mel", **SMALL), tree, out=url, backend="torch", device="cpu", chunk_rows=16)
    assert again.status == "present"
    out = CliRunner().invoke(app, ["info", url])
    assert out.exit_code == 0 and "100" in out.output and url in out.output.replace("\n", ""), out.output


def test_interrupted_featurize_on_s3_resumes_to_the_same_bytes(s3, tree, local):
    url = f"{s3}/cut/mel.zarr"
    with pytest.raises(KeyboardInterrupt):
        featurize(
            FeatureParams("mel", **SMALL),
            tree,
            out=url,
            backend="torch",
            device="cpu",
            chunk_rows=16,
            batch_size=16,
            progress=InterruptAfter(advances=2),
        )
    with pytest.raises(IncompleteStore, match="2 of 7 blocks"):
        reader.open_store(url)
    r = featurize(
        FeatureParams("mel", **SMALL), tree, out=url, backend="torch", device="cpu", chunk_rows=16, batch_size=16
    )
    assert r.status == "resumed" and r.computed == 100 - 32
    assert_same_store(url, local)


def test_a_partial_copy_in_s3_is_found_and_only_its_lost_block_recomputed(s3, tree, local):
    url = f"{s3}/partial/mel.zarr"
    run = dict(backend="torch", device="cpu", chunk_rows=16, batch_size=16)
    featurize(FeatureParams("mel", **SMALL), tree, out=url, **run)
    fs, root = location._fs(url)
    fs.rm(f"{root}/features/c/2/0/0/0")
    with pytest.raises(DamagedStore, match="features: 1 of 7"):
        reader.open_store(url)
    r = featurize(FeatureParams("mel", **SMALL), tree, out=url, **run)
    assert r.status == "repaired" and r.computed == 16
    assert_same_store(url, local)


@pytest.mark.dist
def test_two_ranks_featurize_into_s3(s3, tree, local):
    url = f"{s3}/ranks/mel.zarr"
    r = torchrun(
        *FEATURIZE_SMALL, "--root", str(tree), "--batch-size", "16", "--chunk-rows", "16", "--out", url, check=False
    )
    assert r.returncode == 0 and r.stdout.count("100 clips") == 1, r.stdout + r.stderr
    assert_same_store(url, local)
    assert reader.read_attrs(url)["ranks"] == 2


def test_train_from_s3_equals_training_from_disk(s3, tree, local, tmp_path, monkeypatch):
    from speechcls.engine.fit import fit
    from speechcls.engine.run_dir import read_log

    url = f"{s3}/cache"
    monkeypatch.setenv("SPEECHCLS_CACHE", url)  # the default store location is a bucket now
    r = CliRunner().invoke(app, [*FEATURIZE_SMALL, "--root", str(tree), "--chunk-rows", "16"])
    assert r.exit_code == 0, r.output
    assert f"{url}/tree/mel-" in r.output.replace("\n", "")
    logs = {}
    for where, mode in ((str(local), "device"), ("", "device"), ("", "stream")):  # "": the one store under the cache
        cfg = TrainConfig(store=where, device="cpu", batch_size=32, epochs=2, loader=mode)
        metrics = fit(cfg, tmp_path / f"{mode}-{bool(where)}")
        assert metrics["store"].startswith(url if not where else str(local))
        logs[(where, mode)] = read_log(tmp_path / f"{mode}-{bool(where)}" / "log.csv")
    chapter = lambda log: [(r["epoch"], r["set"], r["loss"], r["acc"]) for r in log]  # noqa: E731  (not timings)
    assert chapter(logs[(str(local), "device")]) == chapter(logs[("", "device")])  # the same bytes, the same run
    assert [r["epoch"] for r in logs[("", "stream")]] == [1, 1, 2, 2]
    run = CliRunner().invoke(
        app, ["train", "--device", "cpu", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "cli")]
    )
    assert run.exit_code == 0 and "test loss" in run.output, run.output
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["store"].startswith(f"{url}/tree/mel-")


def test_a_protocol_without_its_package_is_a_clear_error():
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed here")
    except ImportError:
        pass
    r = CliRunner().invoke(app, ["info", "gs://bucket/none.zarr"])
    assert r.exit_code != 0 and "gcsfs" in r.output, r.output


def test_file_urls_are_local_stores(tree, local, tmp_path):
    url = f"file://{tmp_path}/f/mel.zarr"
    assert (
        location.to_location(url) == tmp_path / "f" / "mel.zarr"
        and location.to_location("s3://b/k.zarr") == "s3://b/k.zarr"
    )
    r = featurize(FeatureParams("mel", **SMALL), tree, out=url, backend="torch", device="cpu", chunk_rows=16)
    assert r.store == tmp_path / "f" / "mel.zarr"  # zarr's LocalStore, with its atomic renames
    assert np.array_equal(read_store(r.store)["features"], read_store(local)["features"])
