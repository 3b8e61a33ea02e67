"""The feature store: one Zarr v3 group per (dataset, variant, parameters, dtype), the only code that
knows its layout. `location` says where a store lives (a folder or an fsspec URL), `format` and `layout`
what it holds and how its rows are cut, `writer` and `reader` are the two sides (ffcv's split: writing and
reading are separate), `guard` what a write may replace, `proof` what a store proves about itself."""

from speechcls.store.format import DEFAULT_CODEC, FORMAT_VERSION, DamagedStore, IncompleteStore
from speechcls.store.location import Location, to_location
from speechcls.store.reader import find_store, open_store, store_info

__all__ = [
    "DEFAULT_CODEC", "FORMAT_VERSION", "DamagedStore", "IncompleteStore", "Location", "to_location",
    "find_store", "open_store", "store_info",
]  # fmt: skip
