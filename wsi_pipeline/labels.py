"""Instance label maps: the one renumbering to 1..N that readers, metrics and post-processing share."""

from __future__ import annotations

import numpy as np

__all__ = ["relabel"]

# Up to this many possible ids per pixel a bincount lookup table is cheaper than sorting pixels.
_DENSE_IDS_PER_PIXEL = 4


def relabel(inst_map: np.ndarray) -> np.ndarray:
    """Ids -> 1..N in ascending order of the original ids (0 stays background), int32.

    Id maps are usually dense (watershed output, annotation files), so the mapping is a
    bincount lookup table; very sparse ids (e.g. hashes) fall back to sorting the unique ids.
    An input that is already 1..N comes back as is (int32, not copied).
    """
    inst_map = np.asarray(inst_map)
    if not np.issubdtype(inst_map.dtype, np.integer):
        as_int = inst_map.astype(np.int64)
        if not np.array_equal(as_int, inst_map):
            raise ValueError(f"instance ids must be integers, got {inst_map.dtype} values")
        inst_map = as_int
    if inst_map.size == 0:
        return inst_map.astype(np.int32, copy=False)
    if inst_map.min() < 0:
        raise ValueError("instance ids must be >= 0")
    top = int(inst_map.max())
    if top <= _DENSE_IDS_PER_PIXEL * inst_map.size:
        present = np.bincount(inst_map.ravel().astype(np.intp, copy=False), minlength=top + 1) > 0
        present[0] = False
        lut = np.cumsum(present, dtype=np.int64).astype(np.int32)
        if int(lut[-1]) == top:
            return inst_map.astype(np.int32, copy=False)
        return lut[inst_map]
    ids = np.unique(inst_map)
    return np.searchsorted(ids if ids[0] == 0 else np.concatenate([[0], ids]), inst_map).astype(np.int32)
