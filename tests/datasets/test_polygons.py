import numpy as np
import pytest

from wsi_pipeline.datasets.polygons import rasterise_polygons


def _square(x0: float, y0: float, side: float) -> np.ndarray:
    return np.array([(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)])


def test_later_polygon_drawn_over_earlier_and_covered_ones_counted() -> None:
    polys = [_square(2, 2, 4), _square(4, 4, 6), _square(3, 3, 1), [(0, 0), (1, 1)]]
    r = rasterise_polygons(polys, (16, 16))
    assert r.index_map[5, 5] == 2
    assert r.index_map[4, 4] == 3  # the third square is drawn last where all three overlap
    assert r.index_map[8, 8] == 2 and r.index_map[2, 2] == 1
    assert r.n_polygons == 3  # the 2-vertex "polygon" is skipped
    assert r.n_dropped == 0
    covered = rasterise_polygons([_square(5, 5, 2), _square(3, 3, 8)], (16, 16))
    assert covered.n_dropped == 1 and set(np.unique(covered.index_map)) == {0, 2}


def test_polygons_outside_the_image_are_an_error_not_a_shift() -> None:
    rasterise_polygons([_square(-10, 0, 14)], (32, 32))  # cut by the edge: fine
    with pytest.raises(ValueError, match="outside the 32x32 image"):
        rasterise_polygons([_square(100, 100, 5)], (32, 32))
