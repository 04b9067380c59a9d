"""Per-nucleus measurements: values, units, level-0 offset/scale, polygons."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage as ndi

from wsi_pipeline.postproc.measure import measure_instances, measure_shapes


def test_measurements_offset_scale_and_units():
    inst = np.zeros((20, 30), np.int32)
    inst[2:8, 3:10] = 1
    inst[10:18, 12:25] = 2
    df = measure_instances(
        inst,
        [1, 2],
        [[0, 0.9, 0.1], [0, 0.2, 0.8]],
        mpp=0.5,
        offset_xy=(100, 200),
        scale=2.0,
        class_names=["bg", "a", "b"],
    )
    assert df["id"].tolist() == [1, 2]
    # centroid of rows 2..7, cols 3..9 is (x=6, y=4.5) in map pixels → level 0
    assert df.loc[0, "x"] == pytest.approx(100 + 2 * 6) and df.loc[0, "y"] == pytest.approx(
        200 + 2 * 4.5
    )
    assert df.loc[0, "x_um"] == pytest.approx(
        df.loc[0, "x"] * 0.25
    )  # 0.5 µm per map px = 0.25 per level-0 px
    assert df.loc[0, "area_px"] == 42 and df.loc[0, "area_um2"] == pytest.approx(42 * 0.25)
    assert (df.loc[0, "bbox_x0"], df.loc[0, "bbox_y1"]) == (106, 216)
    assert df["type_name"].tolist() == ["a", "b"] and df.loc[1, "prob_b"] == pytest.approx(0.8)
    for poly, area in zip(df["polygon"], df["area_px"], strict=True):
        assert poly.is_valid
        assert poly.area == pytest.approx(area * 4, rel=0.25)  # contour at half-pixel, scale² = 4
    assert df.loc[1, "major_axis_um"] > df.loc[1, "minor_axis_um"]
    assert 0 < df.loc[1, "eccentricity"] < 1 and df.loc[1, "solidity"] == pytest.approx(1.0)


def test_no_mpp_gives_nan_microns_and_empty_map_gives_empty_frame():
    inst = np.zeros((10, 10), np.int32)
    inst[2:5, 2:5] = 1
    df = measure_instances(inst)
    assert np.isnan(df.loc[0, "area_um2"]) and df.loc[0, "type_id"] == 0
    empty = measure_instances(np.zeros((10, 10), np.int32))
    assert len(empty) == 0 and "polygon" in empty.columns


def test_measure_shapes_are_measure_instances_columns():
    """The slide chunks' lean measurement gives the very values of the full table's columns."""
    rng = np.random.default_rng(3)
    inst, _ = ndi.label(ndi.gaussian_filter(rng.random((120, 140)), 2) > 0.52)
    full = measure_instances(inst, mpp=0.25, offset_xy=(640, 1280))
    lean = measure_shapes(inst, mpp=0.25, offset_xy=(640, 1280))
    assert len(full) == len(lean["polygon"]) > 5
    for col in ("perimeter_um", "eccentricity", "solidity"):
        assert full[col].to_numpy().tobytes() == lean[col].tobytes()
    assert list(shapely.to_wkb(full["polygon"].to_numpy())) == list(shapely.to_wkb(lean["polygon"]))
