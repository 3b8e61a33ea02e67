"""xarray reads a store (issue 23): every array names its dimensions, so `xarray.open_zarr` gives the
features as a labelled array of clips with label, split, speaker and path beside them; a store whose
arrays carry no names (made before they were recorded) still opens in speechcls."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from speechcls.config import FeatureParams
from speechcls.featurize import featurize
from speechcls.store.reader import open_store, read_all

xr = pytest.importorskip("xarray")

FEATURE_DIMS = {
    "spectrogram": ("clip", "channel", "freq", "time"),
    "mel": ("clip", "channel", "mel", "time"),
    "complex": ("clip", "channel", "freq", "time"),
    "waveform": ("clip", "channel", "sample"),
}


@pytest.fixture(scope="module")
def stores(words10_tree, small_store, tmp_path_factory):
    out = {"mel": small_store()}
    for variant in ("complex", "waveform"):
        path = tmp_path_factory.mktemp(f"xr-{variant}") / f"{variant}.zarr"
        out[variant] = featurize(FeatureParams(variant), words10_tree, out=path, backend="torch", device="cpu").store
    return out


@pytest.mark.parametrize("variant", ["mel", "complex", "waveform"])
def test_xarray_opens_a_store_with_named_dimensions(stores, variant):
    ds = xr.open_zarr(stores[variant], consolidated=False)
    group = open_store(stores[variant])
    assert ds["features"].dims == FEATURE_DIMS[variant]
    assert ds["features"].shape == group["features"].shape
    for name in ("label", "split", "speaker", "path", "valid"):
        assert ds[name].dims == ("clip",)
        np.testing.assert_array_equal(ds[name].values, read_all(group, name))
    assert ds["done"].dims == ("block",)
    # the same numbers as speechcls's reader, row by row, and the rows line up with their paths
    rows = np.array([0, len(ds["path"]) // 2, len(ds["path"]) - 1])
    np.testing.assert_array_equal(ds["features"].isel(clip=rows).values, group["features"][rows.tolist()])
    assert ds.attrs["classes"] == group.attrs["classes"] and ds.attrs["variant"] == variant
    # one labelled selection a user would write: every test clip of one class
    word = ds.attrs["classes"].index("yes") if "yes" in ds.attrs["classes"] else 0
    chosen = ds["features"].where((ds["label"] == word) & (ds["split"] == 2), drop=True)
    assert chosen.sizes["clip"] == int(((read_all(group, "label") == word) & (read_all(group, "split") == 2)).sum())


def test_a_store_without_dimension_names_still_opens_in_speechcls(small_store, tmp_path):
    """A format-4 store made before the names were recorded (format 5 records each array's metadata:
    there, a name removed by hand is damage)."""
    from helpers import as_format_4

    old = as_format_4(shutil.copytree(small_store(), tmp_path / "old.zarr"))
    for meta in old.glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        assert "dimension_names" in doc
        doc.pop("dimension_names")
        meta.write_text(json.dumps(doc))
    group = open_store(old)
    np.testing.assert_array_equal(read_all(group, "label"), read_all(open_store(small_store()), "label"))
    assert group["features"][0].shape == open_store(small_store())["features"][0].shape
