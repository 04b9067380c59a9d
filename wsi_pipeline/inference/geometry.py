"""Tile and chunk geometry: pure functions of sizes, no pixels.

A `TileGrid` covers an H x W map with square input tiles of side `tile` placed every
`stride` pixels. Each tile contributes only its central `stride` x `stride` crop, so every
map pixel is predicted by exactly one tile, at least `(tile - stride) // 2` pixels from that
tile's border. Tile (i, j) crops map rows [i*stride, (i+1)*stride) and reads input rows from
i*stride - offset. The grid starts at the map origin whatever the chunking, so the maps do not
depend on the chunk size.

Output chunks are written whole: tiles are scheduled band by band (one band = one row of
chunks), column by column inside a band, so at most two chunks of a band are open at once. A
tile whose crop straddles two bands is run once for each band (cheaper than keeping a
full-width strip of the next band in memory, which would grow with slide width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    height: int
    width: int
    tile: int
    stride: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"grid needs a non-empty map, got {self.height} x {self.width}")
        if not 0 < self.stride <= self.tile:
            raise ValueError(f"stride must be in (0, tile={self.tile}], got {self.stride}")

    @property
    def offset(self) -> int:
        """Distance from a tile's border to its crop: the margin every output pixel keeps."""
        return (self.tile - self.stride) // 2

    @property
    def shape(self) -> tuple[int, int]:
        """(tile rows, tile columns)."""
        return math.ceil(self.height / self.stride), math.ceil(self.width / self.stride)

    def crop_span(self, index: np.ndarray | int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """[start, stop) of the crops of tiles `index` along axis 0 (rows) or 1 (columns)."""
        size = self.height if axis == 0 else self.width
        start = np.asarray(index) * self.stride
        return start, np.minimum(start + self.stride, size)

    def tile_origin(self, index: np.ndarray | int) -> np.ndarray:
        """Map coordinate where tiles `index` start reading (may be negative)."""
        return np.asarray(index) * self.stride - self.offset

    def padded_extent(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right)) padding that makes every tile lie inside the map."""
        rows, cols = self.shape
        bottom = (rows - 1) * self.stride - self.offset + self.tile - self.height
        right = (cols - 1) * self.stride - self.offset + self.tile - self.width
        return (self.offset, max(bottom, 0)), (self.offset, max(right, 0))


def tiles_touching_mask(grid: TileGrid, mask: np.ndarray, map_to_mask: float) -> np.ndarray:
    """bool (rows, cols): tiles whose crop overlaps a True pixel of `mask`.

    `mask` is a low-resolution image of the same map: map pixel p lies in mask pixel
    floor(p * map_to_mask). Any mask pixel partly covered by the crop counts.
    """
    return tile_mask_coverage(grid, mask, map_to_mask) > 0


def tile_mask_coverage(grid: TileGrid, mask: np.ndarray, map_to_mask: float) -> np.ndarray:
    """float (rows, cols): share of the mask pixels under each tile's crop that are True
    (mask pixels as in `tiles_touching_mask`; 0 where the crop covers no mask pixel)."""
    rows, cols = grid.shape
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)

    def mask_span(start: np.ndarray, stop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        lo = np.clip(np.floor(start * map_to_mask).astype(np.int64), 0, size)
        hi = np.clip(np.ceil(stop * map_to_mask).astype(np.int64), 0, size)
        return lo, np.maximum(hi, lo)

    r0, r1 = mask_span(*grid.crop_span(np.arange(rows), 0), mask.shape[0])
    c0, c1 = mask_span(*grid.crop_span(np.arange(cols), 1), mask.shape[1])
    total = (integral[r1[:, None], c1[None, :]] - integral[r0[:, None], c1[None, :]]
             - integral[r1[:, None], c0[None, :]] + integral[r0[:, None], c0[None, :]])
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return np.divide(total, area, out=np.zeros(total.shape), where=area > 0)


@dataclass(frozen=True)
class Schedule:
    """Tile runs in execution order, and how many runs each output chunk waits for.

    rows, cols, bands: int arrays, one entry per run (a tile may run once per band it spans).
    expected: int (n_bands, n_chunk_cols), runs that write into each chunk (0: never written).
    """

    rows: np.ndarray
    cols: np.ndarray
    bands: np.ndarray
    expected: np.ndarray
    chunk: int

    def __len__(self) -> int:
        return int(self.rows.size)


def schedule(grid: TileGrid, selected: np.ndarray, chunk: int) -> Schedule:
    """Order the selected tiles band by band, column-major inside a band (see module doc)."""
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    n_bands = math.ceil(grid.height / chunk)
    n_ccols = math.ceil(grid.width / chunk)
    ti, tj = np.nonzero(selected)
    r0, r1 = grid.crop_span(ti, 0)
    b0, b1 = r0 // chunk, (r1 - 1) // chunk
    reps = b1 - b0 + 1
    rows, cols = np.repeat(ti, reps), np.repeat(tj, reps)
    bands = np.repeat(b0, reps) + _ranges(reps)
    order = np.lexsort((rows, cols, bands))
    rows, cols, bands = rows[order], cols[order], bands[order]
    c0, c1 = grid.crop_span(cols, 1)
    k0, k1 = c0 // chunk, (c1 - 1) // chunk
    expected = np.zeros((n_bands, n_ccols), np.int64)
    spans = k1 - k0 + 1
    np.add.at(expected, (np.repeat(bands, spans), np.repeat(k0, spans) + _ranges(spans)), 1)
    return Schedule(rows=rows, cols=cols, bands=bands, expected=expected, chunk=chunk)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """[0..c0-1, 0..c1-1, ...] for counts c."""
    if counts.size == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    return np.arange(ends[-1]) - np.repeat(ends - counts, counts)


@dataclass(frozen=True)
class Piece:
    """Part of one tile's output that lands in one chunk.

    chunk_col: which chunk of the band; dst: (row slice, col slice) inside that chunk;
    src: (row slice, col slice) inside the tile's (tile x tile) output.
    """

    chunk_col: int
    dst: tuple[slice, slice]
    src: tuple[slice, slice]


def run_pieces(grid: TileGrid, row: int, col: int, band: int, chunk: int) -> list[Piece]:
    """Where the crop of tile (row, col), limited to `band`, goes: one piece per chunk it meets."""
    r0, r1 = (int(v) for v in grid.crop_span(row, 0))
    r0, r1 = max(r0, band * chunk), min(r1, (band + 1) * chunk)
    c0, c1 = (int(v) for v in grid.crop_span(col, 1))
    if r1 <= r0:
        return []
    tr, tc = int(grid.tile_origin(row)), int(grid.tile_origin(col))
    pieces = []
    for k in range(c0 // chunk, (c1 - 1) // chunk + 1):
        a, b = max(c0, k * chunk), min(c1, (k + 1) * chunk)
        pieces.append(Piece(
            chunk_col=k,
            dst=(slice(r0 - band * chunk, r1 - band * chunk), slice(a - k * chunk, b - k * chunk)),
            src=(slice(r0 - tr, r1 - tr), slice(a - tc, b - tc)),
        ))
    return pieces
