"""`speechcls featurize`: every clip of a tree -> features in batched device passes -> a Zarr store.
Orchestration only: the tree comes from data/, decoding and features from audio/, every store decision
and write from store/.

    index (sorted clips) -> seeded row order -> blocks of whole chunks, through four stages at once:
        decode block b+2 || features of block b+1 || encode and write block b (chunks, then its done flag)

One code path for CPU and CUDA; the DALI backend swaps the transform for spectrogram and mel for DALI's,
within the tolerance its parity test states. Under torchrun every rank featurizes a contiguous range of
blocks (whole chunks, so no two ranks write one object); rank 0 creates the store and completes it.

`orchestration` decides and opens the store and runs the pipeline; `stages` is the pipeline (its threads,
queues and the feature transform); `profile` accounts for where a run's time went. Each imports only the
ones after it in that list.
"""

from speechcls.featurize.orchestration import FeaturizeResult, codec_for, featurize, resolve_backend, resolve_root
from speechcls.featurize.profile import Profile, default_workers
from speechcls.featurize.stages import SUB_BATCH

__all__ = [
    "SUB_BATCH", "FeaturizeResult", "Profile", "codec_for", "default_workers", "featurize", "resolve_backend",
    "resolve_root",
]  # fmt: skip
