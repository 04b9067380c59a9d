"""Seam ownership: which chunk reports a nucleus, and the id it gets.

Every chunk segments its core plus a halo, so nuclei near a seam are seen by several chunks.
Exactly one of them reports each nucleus: the chunk whose core holds the nucleus' centroid.
Centroids are computed from integer pixel sums in map coordinates, so every chunk that sees
the same pixels reaches the same decision bit for bit — no tolerance, no double counting.
Nuclei that touch a window edge inside the map are dropped: they are cut, and the chunk that
owns them (wider than the largest nucleus in every direction) sees them whole.

Ids come from the centroid position (quarter-pixel grid), so they do not depend on the chunk
size, the worker count or the order in which chunks finish.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_pipeline.postproc.window import ChunkWindow

ID_SUBPIXEL = 4  # centroid grid of the ids: 1/4 map pixel


@dataclass(frozen=True)
class OwnedNuclei:
    """Labels of `inst_map` that this chunk reports, with their exact global pixel moments."""

    labels: np.ndarray  # (K,) int, ids in the window's inst_map
    n_px: np.ndarray  # (K,) int64 pixel counts
    sum_r: np.ndarray  # (K,) int64 sum of global map rows
    sum_c: np.ndarray  # (K,) int64 sum of global map cols
    n_edge_cut: int  # cut pieces whose centroid is in the core: > 0 means the halo is too small

    @property
    def centroid_rc(self) -> np.ndarray:
        """(K, 2) float64 centroid in map pixels (row, col)."""
        return np.stack([self.sum_r / self.n_px, self.sum_c / self.n_px], axis=1)


def _edge_labels(inst_map: np.ndarray, win: ChunkWindow, map_hw: tuple[int, int]) -> np.ndarray:
    """Labels on window edges that lie inside the map (a map border cuts nothing)."""
    h, w = map_hw
    edges = []
    if win.win_r0 > 0:
        edges.append(inst_map[0])
    if win.win_r1 < h:
        edges.append(inst_map[-1])
    if win.win_c0 > 0:
        edges.append(inst_map[:, 0])
    if win.win_c1 < w:
        edges.append(inst_map[:, -1])
    if not edges:
        return np.zeros(0, dtype=inst_map.dtype)
    vals = np.unique(np.concatenate(edges))
    return vals[vals != 0]


def owned_nuclei(inst_map: np.ndarray, win: ChunkWindow, map_hw: tuple[int, int]) -> OwnedNuclei:
    """Select the nuclei of a window's `inst_map` (ids 1..N) that this chunk owns."""
    n_lab = int(inst_map.max(initial=0))
    fg = np.flatnonzero(inst_map)
    lab = inst_map.ravel()[fg]
    rows, cols = np.divmod(fg, inst_map.shape[1])
    n_px = np.bincount(lab, minlength=n_lab + 1)[1:].astype(np.int64)
    # Sums of window-local indices are exact integers in float64; the global offset is added
    # in int64 so the same nucleus seen from two windows gets the same centroid bit for bit.
    sum_r = np.bincount(lab, weights=rows, minlength=n_lab + 1)[1:].astype(np.int64)
    sum_c = np.bincount(lab, weights=cols, minlength=n_lab + 1)[1:].astype(np.int64)
    labels = np.arange(1, n_lab + 1)
    present = n_px > 0
    labels, n_px, sum_r, sum_c = labels[present], n_px[present], sum_r[present], sum_c[present]
    sum_r = sum_r + n_px * win.win_r0
    sum_c = sum_c + n_px * win.win_c0
    cent_r, cent_c = sum_r // n_px, sum_c // n_px
    in_core = (
        (cent_r >= win.core_r0)
        & (cent_r < win.core_r1)
        & (cent_c >= win.core_c0)
        & (cent_c < win.core_c1)
    )
    cut = np.isin(labels, _edge_labels(inst_map, win, map_hw))
    keep = in_core & ~cut
    return OwnedNuclei(
        labels=labels[keep],
        n_px=n_px[keep],
        sum_r=sum_r[keep],
        sum_c=sum_c[keep],
        n_edge_cut=int(np.count_nonzero(in_core & cut)),
    )


def nucleus_ids(owned: OwnedNuclei, map_w: int) -> np.ndarray:
    """Stable int64 ids from the centroid on a 1/4-pixel grid: row-major over the map."""
    q_r = (ID_SUBPIXEL * owned.sum_r) // owned.n_px
    q_c = (ID_SUBPIXEL * owned.sum_c) // owned.n_px
    return q_r * (ID_SUBPIXEL * int(map_w)) + q_c
