"""The code on the docs' prose pages runs (issue 23): every Python block of the feature-store page is run
against a store the tests make, the store's path put where the page names one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from speechcls.store.reader import open_store, read_all, split_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)


def test_the_store_page_shows_speechcls_zarr_and_xarray_readers():
    blocks = python_blocks("store-format.md")[1:]  # the first checks the records (below)
    assert len(blocks) == 3
    assert "open_store" in blocks[0] and "zarr.open_group" in blocks[1] and "xr.open_zarr" in blocks[2]


@pytest.fixture(scope="module")
def mini_store(mini_root, tmp_path_factory) -> str:
    """A mel store of the real-speech mini tree (every Speech Commands word, "yes" among them)."""
    from speechcls.config import FeatureParams
    from speechcls.featurize import featurize

    from helpers import SMALL_MEL

    out = tmp_path_factory.mktemp("docs-store") / "mel.zarr"
    return str(featurize(FeatureParams("mel", **SMALL_MEL), mini_root, out=out, backend="torch", device="cpu").store)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_each_reading_example_of_the_store_page_runs(n, mini_store):
    pytest.importorskip("xarray")
    store = mini_store
    code = re.sub(r'"[^"]*\.zarr"', repr(store), python_blocks("store-format.md")[n + 1])
    names: dict = {}
    exec(compile(code, f"store-format.md block {n}", "exec"), names)
    group = open_store(store)
    labels = read_all(group, "label")
    if n == 0:
        train = split_rows(group, "train")
        assert names["x"].shape == (min(128, len(train)), *group["features"].shape[1:])
        np.testing.assert_array_equal(names["y"], labels[train[:128]])
    elif n == 1:
        np.testing.assert_array_equal(np.sort(names["train"]), np.sort(split_rows(group, "train")))
    else:
        yes = group.attrs["classes"].index("yes")
        assert names["test_yes"].sizes["clip"] == int(((labels == yes) & (read_all(group, "split") == 2)).sum()) > 0


def test_the_store_pages_check_of_the_records_passes_an_intact_store_and_fails_an_edited_one(mini_store, tmp_path):
    """The page's code (zarr and hashlib alone) checks array_digests and records_crc32c as the spec says."""
    import json
    import shutil

    block = python_blocks("store-format.md")[0]
    assert "array_digests" in block and "records_crc32c" in block
    exec(compile(re.sub(r'"[^"]*\.zarr"', repr(mini_store), block), "store-format.md block 0", "exec"), {})
    for edit in ("metadata", "swap"):
        copy = shutil.copytree(mini_store, tmp_path / f"{edit}.zarr")
        if edit == "metadata":
            meta = copy / "label" / "zarr.json"
            meta.write_text(json.dumps(json.loads(meta.read_text()) | {"data_type": "int32"}))
        else:
            a, b = (copy / "label/c/0").read_bytes(), (copy / "audio_crc32c/c/0").read_bytes()
            (copy / "label/c/0").write_bytes(b)
            (copy / "audio_crc32c/c/0").write_bytes(a)
        with pytest.raises(AssertionError, match="label"):
            exec(compile(re.sub(r'"[^"]*\.zarr"', repr(str(copy)), block), "store-format.md block 0", "exec"), {})
