"""The nucleus table builder: values, units, level-0 offset/scale, polygons, schema."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage as ndi

from wsi_pipeline.contract import nuclei_schema
from wsi_pipeline.postproc.measure import nucleus_table, pixel_moments

NAMES = ("bg", "a", "B c")


def _two_nuclei() -> np.ndarray:
    inst = np.zeros((20, 30), np.int32)
    inst[2:8, 3:10] = 1
    inst[10:18, 12:25] = 2
    return inst


def test_rows_offset_scale_and_units():
    table = nucleus_table(
        _two_nuclei(), [1, 2], [[0, 0.9, 0.1], [0, 0.2, 0.8]], class_names=NAMES, mpp=0.5,
        origin_xy=(100, 200), scale=2.0, offset_rc=(40, 30),
    )
    assert table.schema == nuclei_schema(NAMES)
    row = table.slice(0, 1).to_pylist()[0]
    assert table.column("nucleus_id").to_pylist() == [1, 2]
    # centroid of rows 2..7, cols 3..9 is (x=6, y=4.5) in the window, + (30, 40) in the map
    assert (row["x"], row["y"]) == pytest.approx((100 + 2 * 36, 200 + 2 * 44.5))
    assert row["x_um"] == pytest.approx(row["x"] * 0.25)  # default level0_mpp: mpp / scale
    assert row["area_um2"] == pytest.approx(42 * 0.25)
    assert table.column("type_name").to_pylist() == ["a", "B c"]
    assert row["type_prob"] == pytest.approx(0.9)
    assert table.column("prob_b_c").to_pylist() == pytest.approx([0.1, 0.8])  # prob_column names
    polys = shapely.from_wkb(table.column("geometry").to_numpy(False))
    assert all(shapely.is_valid(polys)) and all(shapely.get_type_id(polys) == 3)
    # contour at half-pixel; scale² = 4; the window offset is in map px
    assert shapely.area(polys[0]) == pytest.approx(42 * 4, rel=0.25)
    xmin, ymin, _, _ = shapely.bounds(polys[0])
    assert (xmin, ymin) == pytest.approx((100 + 2 * (30 + 2.5), 200 + 2 * (40 + 1.5)))
    bbox = table.column("bbox").to_pylist()[0]
    assert bbox["xmin"] <= xmin and bbox["ymin"] <= ymin
    assert 0 < row["eccentricity"] < 1 and row["solidity"] == pytest.approx(1.0)


def test_ids_sort_the_rows_and_given_moments_are_used():
    inst = _two_nuclei()
    moments = pixel_moments(inst)
    table = nucleus_table(inst, [1, 2], [[0, 1, 0], [0, 0, 1]], class_names=NAMES, mpp=0.5,
                          level0_mpp=0.3, moments=moments, nucleus_ids=np.array([9, 4]))
    assert table.column("nucleus_id").to_pylist() == [4, 9]
    assert table.column("type_id").to_pylist() == [2, 1]
    assert table.column("x_um").to_pylist()[1] == pytest.approx(6 * 0.3)


def test_no_type_probabilities_and_no_instances():
    table = nucleus_table(_two_nuclei(), [0, 0], np.zeros((2, 0), np.float32),
                          class_names=NAMES, mpp=0.25)
    assert np.isnan(table.column("type_prob").to_numpy()).all()
    assert np.isnan(table.column("prob_a").to_numpy()).all()
    empty = nucleus_table(np.zeros((10, 10), np.int32), np.zeros(0), np.zeros((0, 3)),
                          class_names=NAMES, mpp=0.25)
    assert empty.num_rows == 0 and empty.schema == nuclei_schema(NAMES)


def test_simplification_keeps_single_valid_polygons():
    rng = np.random.default_rng(3)
    inst, n = ndi.label(ndi.gaussian_filter(rng.random((120, 140)), 2) > 0.52)
    kept = nucleus_table(inst, np.zeros(n), np.zeros((n, 3)), class_names=NAMES, mpp=0.25)
    simple = nucleus_table(inst, np.zeros(n), np.zeros((n, 3)), class_names=NAMES, mpp=0.25,
                           simplify_px=0.8)
    a, b = (shapely.from_wkb(t.column("geometry").to_numpy(False)) for t in (kept, simple))
    assert n > 5 and all(shapely.get_type_id(b) == 3) and all(shapely.is_valid(b))
    assert shapely.get_num_coordinates(b).sum() < shapely.get_num_coordinates(a).sum()


def test_type_probabilities_are_given_nucleus_and_sum_to_one():
    """A nucleus NS found but NC doubted (background 0.9) reads its types renormalised over the
    foreground classes; the background share keeps its own column."""
    table = nucleus_table(_two_nuclei(), [1, 2], [[0.9, 0.08, 0.02], [0.2, 0.2, 0.6]],
                          class_names=NAMES, mpp=0.5)
    a, bc = (np.asarray(table.column(c).to_pylist()) for c in ("prob_a", "prob_b_c"))
    assert a + bc == pytest.approx([1.0, 1.0])
    assert table.column("type_prob").to_pylist() == pytest.approx([0.8, 0.75])
    assert table.column("prob_bg").to_pylist() == pytest.approx([0.9, 0.2])


def test_type_given_nucleus_without_any_type_share_is_uniform():
    from wsi_pipeline.postproc.measure import type_given_nucleus

    out = type_given_nucleus(np.array([[1.0, 0.0, 0.0, 0.0]]))
    assert out[0, 0] == 1.0 and out[0, 1:] == pytest.approx([1 / 3] * 3)
