"""Nucleus outlines (polygons) -> instance map, with one documented rule for every format.

Rule: polygons are drawn in file order and a later polygon is drawn over an earlier one where
they overlap (annotators outline neighbours on top of each other; this is how ImageScope and
QuPath show them). A polygon left with no pixel (fully covered, or smaller than a pixel) is
dropped and counted. Polygons with fewer than 3 vertices are skipped. Vertices may lie up to
`outside_tolerance_px` (16 px: about a nucleus at 40×) beyond the image, as outlines of nuclei
cut by the tile edge do; further out,
the annotation does not belong to this image (wrong file, or a size that disagrees) and that is
an error, never a silent shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon as draw_polygon


@dataclass(frozen=True)
class Rasterised:
    """`index_map` holds polygon index + 1 (0 = background) before renumbering."""

    index_map: np.ndarray
    n_polygons: int
    n_dropped: int  # drawn over completely, or empty


def rasterise_polygons(
    polygons: Sequence[np.ndarray],
    shape: tuple[int, int],
    *,
    outside_tolerance_px: float | None = 16.0,
) -> Rasterised:
    """Draw (N, 2) arrays of (x, y) = (column, row) vertices onto a (rows, cols) grid."""
    h, w = shape
    out = np.zeros(shape, np.int32)
    n_valid = 0
    for i, xy in enumerate(polygons):
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[0] < 3:
            continue
        n_valid += 1
        if outside_tolerance_px is not None:
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            t = outside_tolerance_px
            if lo[0] < -t or lo[1] < -t or hi[0] > w - 1 + t or hi[1] > h - 1 + t:
                raise ValueError(
                    f"polygon {i + 1} spans x {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}, "
                    f"outside the {w}x{h} image: the annotation does not match the image size"
                )
        rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape=shape)
        out[rr, cc] = i + 1
    kept = int(np.count_nonzero(np.bincount(out.ravel())[1:]))
    return Rasterised(out, n_valid, n_valid - kept)
