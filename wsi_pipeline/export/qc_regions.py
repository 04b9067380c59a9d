"""Where a pathologist should look: crop windows for the QC sheet, and a nucleus-density grid.

A QC sheet is only worth something if its crops are not cherry-picked and are the same on every
run: so they are chosen from statistics of the whole nucleus table, by fixed rules, with no
randomness:

- `densest`: the window with the most nuclei (crowding is where merges and splits happen);
- `least_confident`: the window whose nuclei have the lowest mean type probability (with at
  least `min_nuclei` of them), where the classifier doubts itself;
- `spread`: the windows nearest the centres of k equal parts of the tissue (k-means on the
  candidate windows, seeded deterministically), so that the whole section is represented and
  not only its edges, as farthest-point sampling would do.

Windows are squares of `window` level-0 pixels on a grid of half a window, candidates those at
least `min_tissue_fraction` on tissue; chosen windows never overlap. Everything accumulates
batch by batch (`add`), so memory depends on the slide's size, not its number of nuclei.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DensityGrid", "Region", "RegionGrid"]

#: Samples per bin side when a tissue mask is looked up on a grid (resolution-agnostic).
_SAMPLES = 4
#: Lloyd iterations for the spread crops (converges in a handful on a few thousand candidates).
_LLOYD_ITERATIONS = 20


@dataclass(frozen=True)
class Region:
    """A crop window in level-0 pixels and what was counted in it."""

    kind: str  # "densest", "least_confident" or "spread"
    x0: int
    y0: int
    size: int  # level-0 px per side (the slide may end inside it)
    n_nuclei: int
    mean_type_prob: float | None
    tissue_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


class _Grid:
    """A 2-D histogram over the level-0 plane with square bins of `bin_px` level-0 pixels."""

    def __init__(self, level0_wh: tuple[int, int], bin_px: float) -> None:
        self.level0_wh = (int(level0_wh[0]), int(level0_wh[1]))
        self.bin_px = float(bin_px)
        self.shape = (max(1, math.ceil(self.level0_wh[1] / self.bin_px)),
                      max(1, math.ceil(self.level0_wh[0] / self.bin_px)))
        self.counts = np.zeros(self.shape, np.int64)
        self.tissue = np.ones(self.shape, np.float64)  # until a mask is given: everything counts

    def _flat(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c = np.clip((np.asarray(x, np.float64) // self.bin_px).astype(np.int64), 0, self.shape[1] - 1)
        r = np.clip((np.asarray(y, np.float64) // self.bin_px).astype(np.int64), 0, self.shape[0] - 1)
        return r * self.shape[1] + c

    def add_counts(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        flat = self._flat(x, y)
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.shape)
        return flat

    def set_tissue(self, mask: np.ndarray, mask_px: float) -> None:
        """Fraction of each bin on tissue, `mask` (bool, H×W) having `mask_px` level-0 px per pixel.

        Looked up at _SAMPLES² points per bin, so bins finer or coarser than the mask both work."""
        mask = np.asarray(mask, bool)
        offsets = (np.arange(_SAMPLES) + 0.5) / _SAMPLES
        ys = ((np.arange(self.shape[0])[:, None] + offsets[None, :]) * self.bin_px).ravel()
        xs = ((np.arange(self.shape[1])[:, None] + offsets[None, :]) * self.bin_px).ravel()
        rows = np.floor(ys / mask_px).astype(np.int64)
        cols = np.floor(xs / mask_px).astype(np.int64)
        inside_r = (rows >= 0) & (rows < mask.shape[0])
        inside_c = (cols >= 0) & (cols < mask.shape[1])
        sampled = np.zeros((len(rows), len(cols)), bool)
        sampled[np.ix_(inside_r, inside_c)] = mask[np.ix_(rows[inside_r], cols[inside_c])]
        self.tissue = sampled.reshape(self.shape[0], _SAMPLES, self.shape[1], _SAMPLES).mean(axis=(1, 3))


class DensityGrid(_Grid):
    """Nuclei per mm² on bins of `bin_um` (coarsened so the longest side has ≤ `max_bins`)."""

    def __init__(self, level0_wh: tuple[int, int], slide_mpp: float, bin_um: float,
                 max_bins: int = 512) -> None:
        bin_px = max(bin_um / slide_mpp, max(level0_wh) / max_bins)
        super().__init__(level0_wh, bin_px)
        self.bin_um = bin_px * slide_mpp

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        self.add_counts(x, y)

    def per_mm2(self) -> np.ndarray:
        """Density per bin; NaN where a bin has neither tissue nor nuclei (drawn transparent)."""
        density = self.counts / (self.bin_um**2 / 1e6)
        return np.where((self.tissue > 0) | (self.counts > 0), density, np.nan)


class RegionGrid(_Grid):
    """Counts and type-probability sums on half-window bins, and the crop rules above."""

    def __init__(self, level0_wh: tuple[int, int], window_px: float) -> None:
        super().__init__(level0_wh, window_px / 2)
        self.window = max(1, round(window_px))
        self.prob_sum = np.zeros(self.shape, np.float64)

    def add(self, x: np.ndarray, y: np.ndarray, type_prob: np.ndarray) -> None:
        flat = self.add_counts(x, y)
        self.prob_sum += np.bincount(flat, weights=np.asarray(type_prob, np.float64),
                                     minlength=self.prob_sum.size).reshape(self.shape)

    @staticmethod
    def _windows(a: np.ndarray) -> np.ndarray:
        """Sum over each window of 2×2 bins starting at every bin (beyond the slide: zero)."""
        p = np.pad(a, ((0, 1), (0, 1)))
        return p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:]

    def _inside(self) -> np.ndarray:
        """Windows that lie within the slide (only the first where the slide is smaller): so
        windows at least two bins apart never overlap."""
        w, h = self.level0_wh
        last_r = max(0, math.floor((h - self.window) / self.bin_px + 1e-9))
        last_c = max(0, math.floor((w - self.window) / self.bin_px + 1e-9))
        inside = np.zeros(self.shape, bool)
        inside[: last_r + 1, : last_c + 1] = True
        return inside

    def _region(self, kind: str, r: int | np.integer, c: int | np.integer, n: np.ndarray,
                prob: np.ndarray, tissue: np.ndarray) -> Region:
        count = int(n[r, c])
        return Region(kind=kind, x0=round(c * self.bin_px), y0=round(r * self.bin_px),
                      size=self.window, n_nuclei=count,
                      mean_type_prob=float(prob[r, c] / count) if count else None,
                      tissue_fraction=round(float(tissue[r, c]), 3))

    def choose(self, n_spread: int, *, min_tissue_fraction: float = 0.5,
               min_nuclei: int = 5) -> list[Region]:
        """The densest, the least confident and `n_spread` spread windows, none overlapping
        (fewer where the tissue has no room for them; none on a slide without tissue or nuclei)."""
        n = self._windows(self.counts)
        prob = self._windows(self.prob_sum)
        tissue = self._windows(self.tissue) / 4
        inside = self._inside()
        candidates = inside & (tissue >= min_tissue_fraction)
        if not candidates.any():
            candidates = inside & (tissue > 0)
        if not candidates.any():
            candidates = inside & (n > 0)
        free = candidates.copy()
        chosen: list[Region] = []

        def take(kind: str, r: int | np.integer, c: int | np.integer) -> None:
            chosen.append(self._region(kind, r, c, n, prob, tissue))
            free[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = False  # windows overlapping it

        if (free & (n > 0)).any():
            take("densest", *np.unravel_index(np.argmax(np.where(free, n, -1)), n.shape))
        confident = free & (n >= max(min_nuclei, 1))
        if confident.any():
            mean = np.where(confident, prob / np.maximum(n, 1), np.inf)
            take("least_confident", *np.unravel_index(np.argmin(mean), n.shape))
        spread = []
        for r, c in self._spread_cells(np.argwhere(candidates), n_spread):
            if free[r, c]:
                spread.append((r, c))
                free[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = False
        if len(spread) < n_spread:  # a centre fell on a taken window: nearest free candidates
            for r, c in self._spread_cells(np.argwhere(free), n_spread - len(spread)):
                if free[r, c]:
                    spread.append((r, c))
                    free[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = False
        for r, c in sorted(spread):
            chosen.append(self._region("spread", r, c, n, prob, tissue))
        return chosen

    @staticmethod
    def _spread_cells(cells: np.ndarray, k: int) -> list[tuple[int, int]]:
        """The cell nearest each of k deterministic k-means centres of `cells` (row, col)."""
        if k <= 0 or len(cells) == 0:
            return []
        pts = cells.astype(np.float64)
        k = min(k, len(pts))
        # seeds: the cell nearest the centroid, then farthest-point (deterministic, spread out)
        seeds = [int(np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)))]
        dist = ((pts - pts[seeds[0]]) ** 2).sum(axis=1)
        while len(seeds) < k:
            seeds.append(int(np.argmax(dist)))
            dist = np.minimum(dist, ((pts - pts[seeds[-1]]) ** 2).sum(axis=1))
        centres = pts[seeds].copy()
        for _ in range(_LLOYD_ITERATIONS):
            label = np.argmin(((pts[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2), axis=1)
            moved = np.array([pts[label == j].mean(axis=0) if (label == j).any() else centres[j]
                              for j in range(k)])
            if np.allclose(moved, centres):
                break
            centres = moved
        out = []
        for centre in centres:
            i = int(np.argmin(((pts - centre) ** 2).sum(axis=1)))
            out.append((int(cells[i, 0]), int(cells[i, 1])))
        return out
