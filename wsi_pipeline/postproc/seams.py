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

from wsi_pipeline.postproc.measure import PixelMoments, pixel_moments
from wsi_pipeline.postproc.window import ChunkWindow

ID_SUBPIXEL = 4  # centroid grid of the ids: 1/4 map pixel


@dataclass(frozen=True)
class OwnedNuclei(PixelMoments):
    """Labels of `inst_map` that this chunk reports, with their exact global pixel moments."""

    labels: np.ndarray  # (K,) int, ids in the window's inst_map
    n_edge_cut: int  # cut pieces whose centroid is in the core: > 0 means the halo is too small


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
    moments = pixel_moments(inst_map, (win.win_r0, win.win_c0))
    labels = np.arange(1, moments.n_px.size + 1)
    present = moments.n_px > 0
    labels = labels[present]
    n_px, sum_r, sum_c = moments.n_px[present], moments.sum_r[present], moments.sum_c[present]
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
