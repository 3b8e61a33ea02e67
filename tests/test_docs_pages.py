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
    blocks = python_blocks("store-format.md")
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
    code = re.sub(r'"[^"]*\.zarr"', repr(store), python_blocks("store-format.md")[n])
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
