"""Evidence that two adjacent pieces from step 1 are one over-split nucleus (patent step S6).

Rule (all conditions must hold; thresholds in :class:`PostprocConfig`):

1. **same type** after the vote;
2. **HV maps agree on one centre**: inside a nucleus H ≈ (x - cx) / scale, so a straight-line
   fit of H against x over a piece gives the column ``cx`` it points to (``-intercept /
   slope``), likewise V against y. Pieces of one nucleus point to the same centre, which may
   lie outside a piece; two touching nuclei each point to their own centre, about one
   radius apart each. The pieces merge only if the two centres are closer than
   ``merge_centre_tolerance`` × the merged object's equivalent radius;
3. **long shared border**: at least ``merge_min_contact`` × the smaller piece's equivalent
   diameter (touching round nuclei share a short border);
4. **the border is nucleus**: mean nucleus probability along it ≥ ``merge_min_border_ns``.

Everything is computed with ``np.bincount`` over label arrays; there is no per-object loop.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from wsi_pipeline.postproc.config import PostprocConfig


def adjacent_pairs(
    inst_map: np.ndarray, ns_prob: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique 4-adjacent id pairs (a < b), their contact length in pixel edges, and mean NS across it."""
    a_parts, b_parts, ns_parts = [], [], []
    for axis in (0, 1):
        n = inst_map.shape[axis]
        a = np.take(inst_map, range(n - 1), axis)
        b = np.take(inst_map, range(1, n), axis)
        sel = (a != b) & (a > 0) & (b > 0)
        pa = np.take(ns_prob, range(n - 1), axis)[sel]
        pb = np.take(ns_prob, range(1, n), axis)[sel]
        a_parts.append(np.minimum(a[sel], b[sel]))
        b_parts.append(np.maximum(a[sel], b[sel]))
        ns_parts.append(0.5 * (pa + pb))
    a = np.concatenate(a_parts).astype(np.int64)
    b = np.concatenate(b_parts).astype(np.int64)
    ns = np.concatenate(ns_parts).astype(np.float64)
    if a.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0), np.zeros(0)
    code = a * (int(inst_map.max()) + 1) + b
    uniq, inv = np.unique(code, return_inverse=True)
    contact = np.bincount(inv).astype(np.float64)
    ns_mean = np.bincount(inv, weights=ns) / contact
    m = int(inst_map.max()) + 1
    return np.stack([uniq // m, uniq % m], axis=1), contact, ns_mean


def implied_centres(
    inst_map: np.ndarray, hv: np.ndarray, n_inst: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) centres (x, y) the HV maps point to, and (N,) areas, for contiguous ids 1..N.

    Where a fit is degenerate (flat map, single column) the piece's own centroid is used.
    """
    rows, cols = np.nonzero(inst_map)
    lab = inst_map[rows, cols].astype(np.int64) - 1
    area = np.bincount(lab, minlength=n_inst).astype(np.float64)
    safe_area = np.maximum(area, 1.0)
    centres = np.empty((n_inst, 2))
    for k, (coord, val) in enumerate(((cols, hv[0, rows, cols]), (rows, hv[1, rows, cols]))):
        c = coord.astype(np.float64)
        v = val.astype(np.float64)
        sc = np.bincount(lab, c, n_inst)
        sv = np.bincount(lab, v, n_inst)
        scc = np.bincount(lab, c * c, n_inst)
        scv = np.bincount(lab, c * v, n_inst)
        var = scc - sc * sc / safe_area
        cov = scv - sc * sv / safe_area
        slope = np.where(var > 1e-9, cov / np.where(var > 1e-9, var, 1.0), 0.0)
        mean_c, mean_v = sc / safe_area, sv / safe_area
        ok = slope > 1e-6
        centres[:, k] = np.where(ok, mean_c - mean_v / np.where(ok, slope, 1.0), mean_c)
    return centres, area


def merge_groups(
    inst_map: np.ndarray,
    ns_prob: np.ndarray,
    hv: np.ndarray,
    types: np.ndarray,
    n_inst: int,
    cfg: PostprocConfig,
) -> np.ndarray:
    """Lookup table (n_inst + 1,) from step-1 id to merged-group id (0 → 0, groups 1..M)."""
    pairs, contact, border_ns = adjacent_pairs(inst_map, ns_prob)
    lut = np.arange(n_inst + 1)
    if pairs.shape[0] == 0:
        return lut
    centres, area = implied_centres(inst_map, hv, n_inst)
    i, j = pairs[:, 0] - 1, pairs[:, 1] - 1
    r_union = np.sqrt((area[i] + area[j]) / np.pi)
    centre_gap = np.hypot(*(centres[i] - centres[j]).T)
    eq_diam_small = 2.0 * np.sqrt(np.minimum(area[i], area[j]) / np.pi)
    accept = (
        (types[i] == types[j])
        & (centre_gap <= cfg.merge_centre_tolerance * r_union)
        & (contact >= cfg.merge_min_contact * eq_diam_small)
        & (border_ns >= cfg.merge_min_border_ns)
    )
    if not accept.any():
        return lut
    graph = sparse.coo_matrix(
        (np.ones(int(accept.sum())), (i[accept], j[accept])), shape=(n_inst, n_inst)
    )
    _, comp = connected_components(graph, directed=False)
    lut[1:] = comp + 1
    return lut
