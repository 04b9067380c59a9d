"""maps.zarr's arrays by their contract names (`contract.ARRAY_*`), checked to be arrays: a
folder where an array should be is a damaged maps.zarr, reported by name, not an opaque error
further on. Kept apart from `contract` (pyarrow only) because it needs zarr."""

from __future__ import annotations

import zarr


def maps_array(group: zarr.Group, name: str) -> zarr.Array:
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise TypeError(f"{name} in {group.store} is not an array")
    return array
