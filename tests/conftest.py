import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real speech lives beside the checkout (never inside it): ../shared/data from the project root.
SHARED_DATA = Path(os.environ.get("SPEECHCLS_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared(name: str, what: str) -> Path:
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"{what} not found at {root} (set SPEECHCLS_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def mini_root() -> Path:
    return _shared("speech_commands_v0.01_mini", "real Speech Commands clips")


@pytest.fixture(scope="session")
def fsdd_root() -> Path:
    return _shared("fsdd", "FSDD")


@pytest.fixture(scope="session")
def espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory, espeak) -> Path:
    """A small synthetic tree in the official layout, shared by the tests that only read it."""
    from speechcls.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "synth_commands"
    synthesize(out, words=("yes", "no", "up", "down"), voices=6, seed=3, noise=0.05)
    return out


from helpers import SMALL_MEL, WORDS10  # noqa: E402


@pytest.fixture(scope="session")
def words10_tree(mini_root, tmp_path_factory) -> Path:
    from helpers import copy_tree

    return copy_tree(mini_root, tmp_path_factory.mktemp("words10") / "tree", words=WORDS10)


@pytest.fixture(scope="session")
def small_store(words10_tree, tmp_path_factory):
    """`small_store(chunk_rows=None)`: the 10-word mel store, featurized once per chunking for the whole
    session. Read-only for the tests: one that damages a store copies it first."""
    from speechcls.config import FeatureParams
    from speechcls.featurize import featurize

    made = {}

    def make(chunk_rows: int | None = None) -> Path:
        if chunk_rows not in made:
            out = tmp_path_factory.mktemp("small-store") / "mel.zarr"
            made[chunk_rows] = featurize(
                FeatureParams("mel", **SMALL_MEL),
                words10_tree,
                out=out,
                backend="torch",
                device="cpu",
                chunk_rows=chunk_rows,
            ).store
        return made[chunk_rows]

    return make
