"""Training targets derived from instance maps.

The HV maps follow HoVer-Net (Graham et al., 2019): inside every nucleus, the horizontal
and vertical distance of each pixel to the nucleus' centre of mass, with the negative and
positive sides scaled separately to [-1, 0) and (0, 1] so that every nucleus, large or
small, spans the full range. Background is 0. The sharp sign change between touching
nuclei is what the Sobel step of the watershed detects.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _scale_signed(dist: np.ndarray, labels: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Scale negatives by each label's most negative value `lo`, positives by its largest `hi`.

    `lo`/`hi` are lookup tables indexed by label (entry 0 unused).
    """
    neg_scale = np.where(lo < 0, -lo, 1.0)
    pos_scale = np.where(hi > 0, hi, 1.0)
    return np.where(dist < 0, dist / neg_scale[labels], dist / pos_scale[labels])


def hv_maps(inst_map: np.ndarray) -> np.ndarray:
    """Return the (2, H, W) float32 HV target: channel 0 horizontal (x), channel 1 vertical (y).

    Instance ids need not be contiguous; 0 is background.
    """
    inst_map = np.asarray(inst_map)
    if inst_map.ndim != 2:
        raise ValueError(f"inst_map must be 2-D, got shape {inst_map.shape}")
    out = np.zeros((2,) + inst_map.shape, dtype=np.float32)
    ids = np.unique(inst_map)
    ids = ids[ids != 0]
    if ids.size == 0:
        return out
    # Relabel to 1..n so per-label statistics index a small lookup table.
    lut = np.zeros(int(inst_map.max()) + 1, dtype=np.int64)
    lut[ids] = np.arange(1, ids.size + 1)
    labels = lut[inst_map]
    n = ids.size
    index = np.arange(1, n + 1)
    com = np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, index)).reshape(n, 2)
    com_lut = np.concatenate([np.zeros((1, 2)), com])
    # The extreme offsets of a nucleus are its bounding-box edges minus its centre of mass;
    # find_objects gives all boxes in one pass (ndi.minimum/maximum would sort every pixel).
    boxes = ndi.find_objects(labels)
    first = np.array([[b[0].start, b[1].start] for b in boxes], dtype=np.float64)
    last = np.array([[b[0].stop - 1, b[1].stop - 1] for b in boxes], dtype=np.float64)
    lo = np.concatenate([np.zeros((1, 2)), first - com])
    hi = np.concatenate([np.zeros((1, 2)), last - com])
    rows, cols = np.indices(inst_map.shape, dtype=np.float64)
    fg = labels > 0
    dx = np.where(fg, cols - com_lut[labels, 1], 0.0)
    dy = np.where(fg, rows - com_lut[labels, 0], 0.0)
    out[0] = _scale_signed(dx, labels, lo[:, 1], hi[:, 1])
    out[1] = _scale_signed(dy, labels, lo[:, 0], hi[:, 0])
    return out
