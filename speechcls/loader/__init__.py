"""Cache -> device: the loader facade (loader.py), its epoch cuts (sharding.py), the streaming epoch
(stream.py) and the overlap helpers (prefetch.py)."""

from speechcls.config import LoaderConfig
from speechcls.loader.loader import FeatureLoader, NeedsWaveformStore, choose_mode
from speechcls.loader.sharding import batch_bounds, epoch_permutation, global_bounds, rank_part, shard_bounds

__all__ = [
    "FeatureLoader", "LoaderConfig", "NeedsWaveformStore", "choose_mode", "batch_bounds", "epoch_permutation",
    "global_bounds", "rank_part", "shard_bounds",
]  # fmt: skip
