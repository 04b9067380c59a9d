"""Per-nucleus measurements: position, size and shape, contour polygon, type.

Coordinates follow the project convention: points are (x, y) = (column, row). Map pixel
indices (pixel centres at integers) are converted to level-0 slide pixels by
``level0 = offset + scale * map_px``, so the WSI engine can pass a chunk's origin and the
level-0/map pixel ratio; µm columns use ``mpp`` (µm per *map* pixel) and are NaN when
``mpp`` is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import shapely
from skimage import measure

from wsi_pipeline.contract import PROB_PREFIX

_PROPS = (
    "label",
    "centroid",
    "bbox",
    "area",
    "perimeter",
    "equivalent_diameter_area",
    "axis_major_length",
    "axis_minor_length",
    "eccentricity",
    "solidity",
    "orientation",
    "image",
)


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


#: What a slide chunk's table needs (`chunks.process_chunk`): regionprops computes each
#: property with the same code whichever others are asked for, so these values are the ones
#: `measure_instances` gives, without the per-nucleus cost of the columns the table lacks.
_SHAPE_PROPS = ("label", "bbox", "perimeter", "eccentricity", "solidity", "image")


def measure_shapes(
    inst_map: np.ndarray, *, mpp: float, offset_xy: tuple[float, float] = (0.0, 0.0)
) -> dict[str, np.ndarray]:
    """``polygon`` (object array, map pixel (x, y) + ``offset_xy``), ``perimeter_um``,
    ``eccentricity`` and ``solidity`` per instance id (ascending): the same values as those
    columns of ``measure_instances(inst_map, mpp=mpp, offset_xy=offset_xy)``."""
    props = measure.regionprops_table(np.asarray(inst_map).astype(np.int32), properties=_SHAPE_PROPS)
    ox, oy = offset_xy
    polys = _polygons(props["image"], props["bbox-0"], props["bbox-1"])
    polygon = np.empty(len(polys), dtype=object)
    polygon[:] = [shapely.affinity.affine_transform(p, (1.0, 0, 0, 1.0, ox, oy)) for p in polys]
    return {
        "polygon": polygon,
        "perimeter_um": props["perimeter"] * float(mpp),
        "eccentricity": props["eccentricity"],
        "solidity": props["solidity"],
    }


def measure_instances(
    inst_map: np.ndarray,
    types: np.ndarray | None = None,
    type_probs: np.ndarray | None = None,
    *,
    mpp: float | None = None,
    offset_xy: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per instance id (ascending; contiguous 1..N expected when ``types`` is given).

    Columns: ``id``, ``x``/``y`` centroid and ``bbox_x0, bbox_y0, bbox_x1, bbox_y1`` in
    level-0 pixels (bbox end exclusive), the same centroid in µm, ``area_px`` (map pixels),
    ``area_um2``, ``perimeter_um``, ``equivalent_diameter_um``, ``major_axis_um``,
    ``minor_axis_um``, ``eccentricity``, ``solidity``, ``orientation`` (radians, scikit-image
    convention: angle between the row axis and the major axis), ``polygon`` (shapely, level-0
    pixels), ``type_id``, ``type_name`` and one ``prob_<class>`` column per class.
    """
    inst_map = np.asarray(inst_map)
    props = measure.regionprops_table(inst_map.astype(np.int32), properties=_PROPS)
    n = len(props["label"])
    ox, oy = offset_xy
    um = float("nan") if mpp is None else float(mpp)
    um0 = um / scale  # µm per level-0 pixel
    x = ox + scale * props["centroid-1"]
    y = oy + scale * props["centroid-0"]
    polys = _polygons(props["image"], props["bbox-0"], props["bbox-1"])
    polys = [shapely.affinity.affine_transform(p, (scale, 0, 0, scale, ox, oy)) for p in polys]
    df = pd.DataFrame(
        {
            "id": props["label"].astype(np.int32),
            "x": x,
            "y": y,
            "x_um": x * um0,
            "y_um": y * um0,
            "bbox_x0": ox + scale * props["bbox-1"],
            "bbox_y0": oy + scale * props["bbox-0"],
            "bbox_x1": ox + scale * props["bbox-3"],
            "bbox_y1": oy + scale * props["bbox-2"],
            "area_px": props["area"].astype(np.int64),
            "area_um2": props["area"] * um * um,
            "perimeter_um": props["perimeter"] * um,
            "equivalent_diameter_um": props["equivalent_diameter_area"] * um,
            "major_axis_um": props["axis_major_length"] * um,
            "minor_axis_um": props["axis_minor_length"] * um,
            "eccentricity": props["eccentricity"],
            "solidity": props["solidity"],
            "orientation": props["orientation"],
            "polygon": pd.Series(polys, dtype=object),
        }
    )
    type_ids = (
        np.zeros(n, np.int32) if types is None else np.asarray(types, dtype=np.int32).reshape(-1)
    )
    if type_ids.size != n:
        raise ValueError(f"{type_ids.size} types for {n} instances")
    df["type_id"] = type_ids
    if class_names is not None:
        names = np.asarray(list(class_names), dtype=object)
        df["type_name"] = names[type_ids] if n else pd.Series([], dtype=object)
    if type_probs is not None and np.asarray(type_probs).size:
        probs = np.asarray(type_probs, dtype=np.float32).reshape(n, -1)
        cols = (
            list(class_names)
            if class_names is not None
            else [str(i) for i in range(probs.shape[1])]
        )
        for k, name in enumerate(cols[: probs.shape[1]]):
            df[f"{PROB_PREFIX}{name}"] = probs[:, k]  # the raw name (tile mode), not prob_column
    return df
