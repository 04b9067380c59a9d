"""HV edge map: where the horizontal map falls along x or the vertical map falls along y.

Inside one nucleus the H map rises from -1 to 1 left to right and V from top to bottom, so
any *fall* marks a border between two nuclei (HoVer-Net, Graham et al. 2019). The
derivative is a Sobel operator restricted to the foreground: differences are only taken
between two foreground pixels, so the step from a nucleus to the background (H = 0) is not
mistaken for a border and small nuclei keep their markers.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _masked_derivative(f: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """Central difference along ``axis`` using only foreground neighbours (one-sided at the rim).

    Written with slices and preallocated zero arrays rather than ``np.take``/``np.pad``
    (which copy through fancy indexing): the same float32 operations in the same order, so
    the same bits, at a fraction of the memory traffic.
    """
    f = np.moveaxis(f, axis, -1)
    mask = np.moveaxis(mask, axis, -1)
    valid = mask[..., :-1] & mask[..., 1:]
    d = np.where(valid, f[..., 1:] - f[..., :-1], 0.0)
    fwd = np.zeros(f.shape, d.dtype)
    bwd = np.zeros(f.shape, d.dtype)
    fwd[..., :-1] = d
    bwd[..., 1:] = d
    count = np.zeros(f.shape, np.float32)
    count[..., :-1] = valid
    count[..., 1:] += valid
    out = (fwd + bwd) / np.maximum(count, 1.0)
    return np.moveaxis(out, -1, axis)


def _smooth_inside(f: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing normalised by the foreground weight, so background zeros do not bleed in."""
    if sigma <= 0:
        return f
    w = mask.astype(np.float32)
    num = ndi.gaussian_filter(f * w, sigma, mode="nearest")
    den = ndi.gaussian_filter(w, sigma, mode="nearest")
    return np.where(mask, num / np.maximum(den, 1e-6), 0.0).astype(np.float32)


def hv_edges(hv: np.ndarray, mask: np.ndarray, sigma_px: float = 0.0) -> np.ndarray:
    """Edge strength (H, W): the H fall along x plus the V fall along y, per pixel.

    Each fall is Sobel-smoothed across its direction ([1, 2, 1] / 4) and clipped at 0 (rises
    are the normal inside of a nucleus); the two maps are superimposed by adding them, so a
    diagonal border where both maps fall a little is as visible as one where one falls a lot.
    """
    h = _smooth_inside(hv[0].astype(np.float32), mask, sigma_px)
    v = _smooth_inside(hv[1].astype(np.float32), mask, sigma_px)
    tri = np.array([0.25, 0.5, 0.25], np.float32)
    fall_x = np.maximum(-_masked_derivative(h, mask, axis=1), 0.0)
    fall_y = np.maximum(-_masked_derivative(v, mask, axis=0), 0.0)
    fall_x = ndi.correlate1d(fall_x, tri, axis=0, mode="nearest")
    fall_y = ndi.correlate1d(fall_y, tri, axis=1, mode="nearest")
    return np.where(mask, fall_x + fall_y, 0.0).astype(np.float32)
