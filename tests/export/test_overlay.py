"""export/overlay.py: the quick-look overlay draws nuclei in their class colour, as outlines when they
are big enough to see and as dots otherwise, with the tissue outlined."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from PIL import Image

from wsi_pipeline.export.overlay import TISSUE_OUTLINE_RGB, render_overlay

COLORS = ["#000000", "#ff0000", "#00ff00"]
WHITE = (255, 255, 255)


def _table(path, squares: list[tuple[float, float, float, int]], mpp: float) -> None:
    """Square nuclei (centre x, centre y, side in level-0 px, type id)."""
    geoms = [shapely.box(x - s / 2, y - s / 2, x + s / 2, y + s / 2) for x, y, s, _ in squares]
    pq.write_table(pa.table({
        "x": [float(x) for x, _, _, _ in squares],
        "y": [float(y) for _, y, _, _ in squares],
        "area_um2": pa.array([s * s * mpp * mpp for _, _, s, _ in squares], pa.float32()),
        "type_id": pa.array([t for *_, t in squares], pa.int16()),
        "geometry": shapely.to_wkb(np.array(geoms)).tolist(),
    }), path)


def _render(tmp_path, squares, *, tissue_png=None, slide_path=None, max_px=100, **kw):
    parquet, out = tmp_path / "nuclei.parquet", tmp_path / "overlay.png"
    _table(parquet, squares, 0.25)
    mpp = render_overlay(parquet, out, level0_wh=(400, 200), slide_mpp=0.25, slide_path=slide_path,
                         tissue_png=tissue_png or tmp_path / "absent.png", class_colors=COLORS,
                         max_px=max_px, **kw)
    return mpp, np.asarray(Image.open(out).convert("RGB"))


def test_small_nuclei_are_dots_of_their_class_colour(tmp_path):
    # 400 x 200 level-0 px into 100 px: 4 level-0 px per overlay pixel, 1 µm per overlay pixel
    mpp, img = _render(tmp_path, [(40, 40, 6, 1), (200, 100, 6, 2)])
    assert mpp == 1.0 and img.shape == (50, 100, 3)
    assert tuple(img[10, 10]) == (255, 0, 0) and tuple(img[25, 50]) == (0, 255, 0)
    assert (img != 255).any(axis=2).sum() == 2  # one pixel each, on white (no slide to read)


def test_large_nuclei_are_outlines(tmp_path):
    _mpp, img = _render(tmp_path, [(200, 100, 80, 2)])  # 20 overlay px across
    assert tuple(img[15, 50]) == (0, 255, 0)  # top edge of the square (y = 60 / 4)
    assert tuple(img[25, 50]) == WHITE  # inside stays open
    assert (img == (0, 255, 0)).all(axis=2).sum() > 60


def test_tissue_outline_and_batches(tmp_path):
    tissue = tmp_path / "tissue.png"
    mask = np.zeros((20, 40), np.uint8)
    mask[5:15, 10:30] = 255
    Image.fromarray(mask).save(tissue)
    squares = [(20 + 8 * k, 20, 6, 1 + k % 2) for k in range(30)]
    _mpp, one = _render(tmp_path, squares, tissue_png=tissue)
    _mpp, batched = _render(tmp_path, squares, tissue_png=tissue, batch_rows=7)
    np.testing.assert_array_equal(one, batched)  # the table is read in batches, same picture
    ring = (one == TISSUE_OUTLINE_RGB).all(axis=2)
    assert ring.any() and not ring[25, 50]  # the rim of the tissue, not its inside
    assert ring[12, 50] or ring[13, 50]


def test_unreadable_slide_gives_a_white_background_and_a_warning(tmp_path, caplog):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"not a slide")
    with caplog.at_level(logging.WARNING, logger="wsi_pipeline.export.overlay"):
        _mpp, img = _render(tmp_path, [(40, 40, 6, 1)], slide_path=str(broken))
    assert "without slide background" in caplog.text
    assert (img != 255).any(axis=2).sum() == 1
