"""DALI's spectrogram and mel (CPU pipeline) against torchaudio, on real speech."""

import numpy as np
import pytest

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (Linux x86_64 only)")

from speechcls.audio import dali  # noqa: E402
from speechcls.config import FeatureParams  # noqa: E402
from speechcls.featurize import featurize, resolve_backend  # noqa: E402

from helpers import read_store, reference  # noqa: E402


@pytest.mark.parametrize("variant", ["spectrogram", "mel"])
def test_dali_equals_torchaudio_within_stated_tolerance(mini_root, tmp_path, variant):
    params = FeatureParams(variant)
    result = featurize(
        params, mini_root, out=tmp_path / "d.zarr", backend="dali", device="cpu", batch_size=100, chunk_rows=50
    )
    s = read_store(result.store)
    assert s["attrs"]["engine"] == {"backend": "dali", "device": "cpu"}
    errs = []
    for i, rel in enumerate(s["path"]):
        ref = reference(mini_root, rel, params).astype(np.float64)
        errs.append(np.abs(s["features"][i] - ref).max() / np.abs(ref).max())
    assert max(errs) <= dali.PARITY_RTOL[variant]
    assert max(errs) > 0  # really DALI's numbers, not torch's


def test_dali_complex_goes_through_torch(mini_root, tmp_path):
    params = FeatureParams("complex")
    a = read_store(featurize(params, mini_root, out=tmp_path / "a.zarr", backend="dali", device="cpu").store)
    b = read_store(featurize(params, mini_root, out=tmp_path / "b.zarr", backend="torch", device="cpu").store)
    assert np.array_equal(a["features"], b["features"])


def test_auto_backend_is_torch_and_dali_when_asked():
    assert resolve_backend("auto", FeatureParams("mel"), "cpu") == "torch"  # measured faster at full size
    assert resolve_backend("dali", FeatureParams("mel"), "cpu") == "dali"
    assert resolve_backend("auto", FeatureParams("complex"), "cpu") == "torch"
    assert resolve_backend("auto", FeatureParams("mel"), "cuda") == "torch"
