"""The nucleus table: instance map + types + type probabilities → rows of nuclei.parquet.

`nucleus_table` is the one builder of those rows (`contract.nuclei_schema`): the slide path
(`chunks.process_chunk`, one chunk's owned nuclei) and tile mode (`tile_mode.predict`, one
image) both call it, so a nucleus has the same columns, units and outline rules wherever it
was found.

Coordinates follow the project convention: points are (x, y) = (column, row). Map pixel
indices (pixel centres at integers) are converted to level-0 slide pixels by
``level0 = origin + scale * map_px``; ``mpp`` is µm per *map* pixel, ``level0_mpp`` µm per
level-0 pixel (tile mode: the image's own pixels, scale 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import shapely
from skimage import measure

from wsi_pipeline.contract import BBOX_TYPE, nuclei_schema, prob_column


def type_given_nucleus(mean_probs: np.ndarray) -> np.ndarray:
    """Per-nucleus class probabilities as the table reports them, from the type branch's mean
    softmax (N, C) over background (column 0) + the C-1 types.

    Column 0 stays the background share (how much the type branch doubts that this is a
    nucleus at all, which NS already decided it is); columns 1.. become the probability of
    each type *given that it is a nucleus*: renormalised over the types, so they sum to 1. A
    nucleus found by NS but doubted by NC (background 0.9, epithelial 0.08, others 0.02) then
    reads epithelial 0.8, not 0.08. Rows whose types are all 0 get the uniform 1/(C-1).
    """
    probs = np.asarray(mean_probs, dtype=np.float64)
    out = probs.copy()
    if probs.shape[1] < 2:
        return out.astype(np.float32)
    fg = probs[:, 1:]
    total = fg.sum(axis=1, keepdims=True)
    uniform = np.full_like(fg, 1.0 / fg.shape[1])
    out[:, 1:] = np.where(total > 0, fg / np.where(total > 0, total, 1.0), uniform)
    return out.astype(np.float32)


@dataclass(frozen=True)
class PixelMoments:
    """Pixel count and sums of global map row and column indices per label, exact in int64,
    so that every window that sees a nucleus's pixels computes the same centroid bit for bit."""

    n_px: np.ndarray  # (K,) int64 pixel counts
    sum_r: np.ndarray  # (K,) int64 sum of global map rows
    sum_c: np.ndarray  # (K,) int64 sum of global map cols

    @property
    def centroid_rc(self) -> np.ndarray:
        """(K, 2) float64 centroid in map pixels (row, col)."""
        return np.stack([self.sum_r / self.n_px, self.sum_c / self.n_px], axis=1)


def pixel_moments(inst_map: np.ndarray, offset_rc: tuple[int, int] = (0, 0)) -> PixelMoments:
    """The moments of labels 1..max(inst_map) (an absent label: count 0); `offset_rc` is the
    global map position of `inst_map`'s pixel (0, 0)."""
    n_lab = int(inst_map.max(initial=0))
    fg = np.flatnonzero(inst_map)
    lab = inst_map.ravel()[fg]
    rows, cols = np.divmod(fg, inst_map.shape[1])
    n_px = np.bincount(lab, minlength=n_lab + 1)[1:].astype(np.int64)
    # Sums of window-local indices are exact integers in float64; the global offset is added
    # in int64 so the same nucleus seen from two windows gets the same centroid bit for bit.
    sum_r = np.bincount(lab, weights=rows, minlength=n_lab + 1)[1:].astype(np.int64)
    sum_c = np.bincount(lab, weights=cols, minlength=n_lab + 1)[1:].astype(np.int64)
    r0, c0 = offset_rc
    return PixelMoments(n_px=n_px, sum_r=sum_r + n_px * int(r0), sum_c=sum_c + n_px * int(c0))


def _polygons(
    images: Sequence[np.ndarray], r0: np.ndarray, c0: np.ndarray
) -> list[shapely.Polygon]:
    """Outer contour of each instance crop, in map pixel (x, y); one loop step per nucleus."""
    polys = []
    for img, r, c in zip(images, r0, c0, strict=True):
        padded = np.pad(img, 1).astype(np.uint8)
        contours = measure.find_contours(padded, 0.5, fully_connected="high")
        ring = max(contours, key=len)
        xy = np.column_stack([ring[:, 1] + c - 1, ring[:, 0] + r - 1])
        poly = shapely.Polygon(xy) if len(xy) >= 4 else shapely.Point(xy.mean(axis=0)).buffer(0.5)
        polys.append(poly if poly.is_valid else shapely.make_valid(poly).buffer(0))
    return polys


#: The regionprops the table needs; the centroid and area come from `pixel_moments`.
_SHAPE_PROPS = ("label", "bbox", "perimeter", "eccentricity", "solidity", "image")


def measure_shapes(
    inst_map: np.ndarray, *, mpp: float, offset_rc: tuple[int, int] = (0, 0)
) -> dict[str, np.ndarray]:
    """``polygon`` (object array, map pixel (x, y) of a map whose pixel ``offset_rc`` is
    `inst_map`'s (0, 0)), ``perimeter_um``, ``eccentricity`` and ``solidity`` per instance id
    (ascending). The integer offset goes into the traced vertices themselves (exact: half-pixel
    values plus integers), not through one more transform per polygon."""
    props = measure.regionprops_table(np.asarray(inst_map).astype(np.int32), properties=_SHAPE_PROPS)
    r0, c0 = offset_rc
    polygon = np.empty(len(props["label"]), dtype=object)
    polygon[:] = _polygons(props["image"], props["bbox-0"] + int(r0), props["bbox-1"] + int(c0))
    return {
        "polygon": polygon,
        "perimeter_um": props["perimeter"] * float(mpp),
        "eccentricity": props["eccentricity"],
        "solidity": props["solidity"],
    }


def bbox_array(polygons: np.ndarray) -> pa.StructArray:
    """The `bbox` column of `polygons` (float32, xmin/ymin rounded down, xmax/ymax up)."""
    bounds = shapely.bounds(polygons).reshape(-1, 4)
    b32 = bounds.astype(np.float32)
    low, high = b32[:, :2], b32[:, 2:]
    low[:] = np.where(low > bounds[:, :2], np.nextafter(low, np.float32(-np.inf)), low)
    high[:] = np.where(high < bounds[:, 2:], np.nextafter(high, np.float32(np.inf)), high)
    return pa.StructArray.from_arrays([pa.array(b32[:, k]) for k in range(4)],
                                      fields=list(BBOX_TYPE))


def _largest_polygon(geom: shapely.Geometry) -> shapely.Polygon:
    """make_valid may split a pinched outline into parts; the nucleus is the largest."""
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, shapely.Polygon)]
    return max(parts, key=lambda g: g.area) if parts else shapely.Polygon()


def nucleus_table(
    inst_map: np.ndarray,
    types: np.ndarray,
    type_probs: np.ndarray,
    *,
    class_names: Sequence[str],
    mpp: float,
    level0_mpp: float | None = None,
    scale: float = 1.0,
    origin_xy: tuple[float, float] = (0.0, 0.0),
    offset_rc: tuple[int, int] = (0, 0),
    moments: PixelMoments | None = None,
    nucleus_ids: np.ndarray | None = None,
    simplify_px: float | None = None,
    optical_density: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """The nuclei table rows (`contract.nuclei_schema`, sorted by `nucleus_id`) of the
    instances of `inst_map`, ids 1..K, with `types` (K,) and `type_probs` (K, C) (C = 0:
    no type maps; type_prob and the prob_* columns are then NaN). `type_probs` is the type
    branch's mean softmax; the table holds `type_given_nucleus` of it: prob_<type> and type_prob
    given that the object is a nucleus, prob_<background class> the background share.

    `inst_map` lies at `offset_rc` (row, col) in the map's pixels; `origin_xy`, `scale` place
    the map in level 0 and `level0_mpp` (default: `mpp / scale`) gives its µm. `moments`: the
    instances' pixel moments where the caller has them (slide chunks: ownership's), else
    measured here; x, y are their exact centroids, area_um2 their pixel count. `nucleus_ids`
    default to 1..K. Outlines are traced in global map pixels (so every chunk that sees a
    nucleus traces the same vertices), simplified with `simplify_px` (map px; None: kept as
    traced), made single valid polygons, then moved to level 0. `optical_density`: the
    OD_COLUMNS (`postproc.od`), which the schema then holds.
    """
    types = np.asarray(types).astype(np.int16)
    n = types.shape[0]
    schema = nuclei_schema(tuple(class_names), optical_density=optical_density is not None)
    if n == 0:
        return schema.empty_table()
    inst_map = np.asarray(inst_map)
    r0, c0 = offset_rc
    if moments is None:
        moments = pixel_moments(inst_map, offset_rc)
    if moments.n_px.shape[0] != n:
        raise ValueError(f"{n} types for {moments.n_px.shape[0]} instances")
    ox, oy = origin_xy
    um0 = mpp / scale if level0_mpp is None else level0_mpp
    m = measure_shapes(inst_map, mpp=mpp, offset_rc=(r0, c0))
    centroid = moments.centroid_rc
    x = ox + centroid[:, 1] * scale
    y = oy + centroid[:, 0] * scale
    polys = m["polygon"] if simplify_px is None else shapely.simplify(m["polygon"], simplify_px)
    bad = ~(shapely.is_valid(polys) & (shapely.get_type_id(polys) == 3))
    polys[bad] = [_largest_polygon(shapely.make_valid(p)) for p in polys[bad]]
    polys = shapely.transform(polys, lambda xy: xy * scale + (ox, oy))
    probs = np.asarray(type_probs, dtype=np.float32).reshape(n, -1)
    if probs.shape[1] == 0:
        probs = np.full((n, len(class_names)), np.nan, np.float32)
    else:
        probs = type_given_nucleus(probs)
    cols = {
        "nucleus_id": np.arange(1, n + 1, dtype=np.int64) if nucleus_ids is None else nucleus_ids,
        "x": x,
        "y": y,
        "x_um": x * um0,
        "y_um": y * um0,
        "area_um2": (moments.n_px * mpp**2).astype(np.float32),
        "perimeter_um": m["perimeter_um"].astype(np.float32),
        "eccentricity": m["eccentricity"].astype(np.float32),
        "solidity": m["solidity"].astype(np.float32),
        "type_id": types,
        "type_name": np.asarray(class_names, dtype=object)[types],
        "type_prob": probs[np.arange(n), types],
    }
    for k, name in enumerate(class_names):
        cols[prob_column(name)] = probs[:, k]
    cols["geometry"] = shapely.to_wkb(polys)
    cols["bbox"] = bbox_array(polys)
    if optical_density is not None:
        cols.update(optical_density)
    order = np.argsort(cols["nucleus_id"], kind="stable")
    return pa.table(cols, schema=schema).take(order)
