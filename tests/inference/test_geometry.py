"""Tile/chunk geometry: every map pixel comes from exactly one tile, far enough from its border."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.inference.geometry import (
    TileGrid,
    run_pieces,
    schedule,
    tile_mask_coverage,
    tiles_touching_mask,
)


def paint_crops(grid: TileGrid, selected: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coverage count and minimum distance to the owning tile's border, by brute force."""
    count = np.zeros((grid.height, grid.width), int)
    margin = np.full((grid.height, grid.width), 10**9)
    rows, cols = grid.shape
    for i in range(rows):
        for j in range(cols):
            if selected is not None and not selected[i, j]:
                continue
            (r0,), (r1,) = (np.atleast_1d(v) for v in grid.crop_span(i, 0))
            (c0,), (c1,) = (np.atleast_1d(v) for v in grid.crop_span(j, 1))
            count[r0:r1, c0:c1] += 1
            tr, tc = grid.tile_origin(i), grid.tile_origin(j)
            rr, cc = np.mgrid[r0:r1, c0:c1]
            d = np.minimum.reduce([rr - tr, tr + grid.tile - 1 - rr, cc - tc, tc + grid.tile - 1 - cc])
            margin[r0:r1, c0:c1] = np.minimum(margin[r0:r1, c0:c1], d)
    return count, margin


@pytest.mark.parametrize("h,w,tile,stride", [(100, 70, 32, 16), (64, 64, 32, 32), (5, 300, 64, 40),
                                             (257, 129, 256, 192)])
def test_crops_partition_map_with_margin(h, w, tile, stride):
    grid = TileGrid(h, w, tile, stride)
    count, margin = paint_crops(grid)
    assert (count == 1).all()
    assert margin.min() >= grid.offset
    (top, bottom), (left, right) = grid.padded_extent()
    rows, cols = grid.shape
    assert top == left == grid.offset
    assert grid.tile_origin(rows - 1) + tile == h + bottom
    assert grid.tile_origin(cols - 1) + tile == w + right


def test_grid_rejects_bad_stride():
    with pytest.raises(ValueError):
        TileGrid(10, 10, 32, 40)
    with pytest.raises(ValueError):
        TileGrid(10, 10, 32, 0)


@pytest.mark.parametrize("scale", [0.25, 1 / 32, 0.1, 1.0])
def test_tiles_touching_mask_matches_brute_force(scale):
    rng = np.random.default_rng(1)
    grid = TileGrid(300, 420, 64, 48)
    mh, mw = int(np.ceil(300 * scale)), int(np.ceil(420 * scale))
    mask = rng.random((mh, mw)) > 0.97
    got = tiles_touching_mask(grid, mask, scale)
    coverage = tile_mask_coverage(grid, mask, scale)
    rows, cols = grid.shape
    want = np.zeros((rows, cols), bool)
    want_coverage = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            r0, r1 = grid.crop_span(i, 0)
            c0, c1 = grid.crop_span(j, 1)
            mr = slice(int(np.floor(r0 * scale)), int(np.ceil(r1 * scale)))
            mc = slice(int(np.floor(c0 * scale)), int(np.ceil(c1 * scale)))
            want[i, j] = mask[mr, mc].any()
            want_coverage[i, j] = mask[mr, mc].mean()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(coverage, want_coverage)


def test_tiles_touching_empty_mask_selects_nothing():
    grid = TileGrid(500, 500, 256, 192)
    assert not tiles_touching_mask(grid, np.zeros((16, 16), bool), 1 / 32).any()


@pytest.mark.parametrize("h,w,stride,chunk", [(300, 410, 48, 100), (256, 256, 64, 128), (97, 33, 20, 7),
                                              (1000, 900, 192, 512)])
def test_schedule_writes_each_selected_pixel_once_and_counts_runs(h, w, stride, chunk):
    rng = np.random.default_rng(0)
    grid = TileGrid(h, w, stride + 16, stride)
    selected = rng.random(grid.shape) > 0.3
    plan = schedule(grid, selected, chunk)
    canvas = np.zeros((h, w), int)
    seen = np.zeros_like(plan.expected)
    open_chunks_max = 0
    done = np.zeros_like(plan.expected, bool)
    for row, col, band in zip(plan.rows, plan.cols, plan.bands, strict=True):
        for p in run_pieces(grid, row, col, band, chunk):
            r_off, c_off = band * chunk, p.chunk_col * chunk
            dst = canvas[r_off + p.dst[0].start : r_off + p.dst[0].stop,
                         c_off + p.dst[1].start : c_off + p.dst[1].stop]
            assert dst.shape == (p.src[0].stop - p.src[0].start, p.src[1].stop - p.src[1].start)
            assert p.src[0].start >= grid.offset and p.src[1].start >= grid.offset
            assert p.src[0].stop <= grid.tile - grid.offset and p.src[1].stop <= grid.tile - grid.offset
            dst += 1
            seen[band, p.chunk_col] += 1
        done |= (seen == plan.expected) & (plan.expected > 0)
        open_chunks_max = max(open_chunks_max, int(((seen > 0) & ~done).sum()))
    np.testing.assert_array_equal(seen, plan.expected)
    count, _ = paint_crops(grid, selected)
    np.testing.assert_array_equal(canvas, count)
    if chunk >= stride:
        assert open_chunks_max <= 2  # memory stays a couple of chunks whatever the slide width


def test_schedule_of_nothing_is_empty():
    grid = TileGrid(100, 100, 32, 16)
    plan = schedule(grid, np.zeros(grid.shape, bool), 64)
    assert len(plan) == 0 and plan.expected.sum() == 0 and plan.expected.shape == (2, 2)


def test_schedule_order_is_band_then_column():
    grid = TileGrid(400, 400, 64, 32)
    plan = schedule(grid, np.ones(grid.shape, bool), 100)
    keys = plan.bands * 10**6 + plan.cols * 10**3 + plan.rows
    assert (np.diff(keys) > 0).all()
    # a tile row that straddles a band boundary runs once per band
    assert len(plan) > grid.shape[0] * grid.shape[1]
