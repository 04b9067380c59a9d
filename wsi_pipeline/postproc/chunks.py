"""One chunk of the slide maps → the table rows of the nuclei it owns.

The maps are segmented one window at a time so memory does not grow with the slide. Each
window is its zarr chunk (the *core*) widened by a halo on every side, clipped to the map.
The halo must exceed the largest nucleus plus the reach of the watershed, so that a nucleus
whose centroid lies in the core is segmented as a whole-map segmentation would segment it
(up to the watershed's tie-breaking between equal-energy pixels, which can move single
boundary pixels). Nuclei are measured and outlined here (`measure.nucleus_table`, the one
builder of the table's rows), so only small tables leave a task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import zarr

from wsi_pipeline.contract import ARRAY_HV, ARRAY_INFERRED, ARRAY_NC, ARRAY_NS, nuclei_schema
from wsi_pipeline.maps_store import maps_array
from wsi_pipeline.postproc import PostprocConfig, segment_instances
from wsi_pipeline.postproc.measure import nucleus_table
from wsi_pipeline.postproc.od import SlidePixels, nucleus_od_stats, window_rgb
from wsi_pipeline.postproc.seams import nucleus_ids, owned_nuclei
from wsi_pipeline.postproc.window import ChunkWindow


def chunk_windows(
    map_hw: tuple[int, int], chunk_hw: tuple[int, int], halo_px: int
) -> list[ChunkWindow]:
    """Tile a (H, W) map into chunk cores of `chunk_hw`, each padded by `halo_px` (clipped)."""
    h, w = map_hw
    ch, cw = chunk_hw
    if ch <= 0 or cw <= 0 or halo_px < 0:
        raise ValueError(f"bad chunk {chunk_hw} or halo {halo_px}")
    out: list[ChunkWindow] = []
    for r0 in range(0, h, ch):
        for c0 in range(0, w, cw):
            r1, c1 = min(r0 + ch, h), min(c0 + cw, w)
            out.append(
                ChunkWindow(
                    index=len(out),
                    core_r0=r0,
                    core_r1=r1,
                    core_c0=c0,
                    core_c1=c1,
                    win_r0=max(0, r0 - halo_px),
                    win_r1=min(h, r1 + halo_px),
                    win_c0=max(0, c0 - halo_px),
                    win_c1=min(w, c1 + halo_px),
                )
            )
    return out


@dataclass(frozen=True)
class MapsContext:
    """What a chunk task needs besides its window: small and picklable for Dask workers."""

    maps_path: str
    map_hw: tuple[int, int]
    mpp: float  # model (map) microns per pixel
    slide_mpp: float  # level-0 microns per pixel
    scale: float  # level-0 pixels per map pixel
    origin_xy: tuple[float, float]  # level-0 position of map pixel (0, 0)
    class_names: tuple[str, ...]
    simplify_px: float  # polygon simplification tolerance, map pixels
    postproc: PostprocConfig
    od: SlidePixels | None = None  # set: also the optical-density columns (postproc.od)

    def schema(self) -> pa.Schema:
        return nuclei_schema(self.class_names, optical_density=self.od is not None)


def _read_window(ctx: MapsContext, win: ChunkWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(ns, hv, nc) of the window as float32, or None where nothing in it was inferred."""
    group = zarr.open_group(ctx.maps_path, mode="r")
    arrays = {name: maps_array(group, name) for name in (ARRAY_INFERRED, ARRAY_NS, ARRAY_HV, ARRAY_NC)}
    rs, cs = win.window
    if not np.any(arrays[ARRAY_INFERRED][rs, cs]):
        return None
    ns = np.asarray(arrays[ARRAY_NS][rs, cs], dtype=np.float32)
    hv = np.asarray(arrays[ARRAY_HV][:, rs, cs], dtype=np.float32)
    nc = np.asarray(arrays[ARRAY_NC][:, rs, cs], dtype=np.float32) / np.float32(255.0)
    return ns, hv, nc


def foreground_box(ns: np.ndarray, cfg: PostprocConfig, mpp: float) -> tuple[slice, slice] | None:
    """The part of a window worth segmenting: the bounding box of its foreground pixels
    (ns >= threshold) grown by a margin, or None without any.

    Segmenting that box gives the same instances as segmenting the whole window, and it is
    all a window at a tissue edge or around a small island needs: every step of
    `segment_instances` is local to the foreground — the foreground's holes and small blobs,
    edges from differences between foreground pixels (Gaussian smoothing of radius 4 sigma
    weighted by the foreground, then a 3-tap filter, both replicating the box's border, which
    the margin keeps background), markers, watersheds and merges inside the foreground — and
    labels are numbered in raster order, which a box keeps. tests/postproc/test_slide.py pins
    the equality on real maps.
    """
    rows = np.flatnonzero((ns >= cfg.ns_threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((ns[rows[0] : rows[-1] + 1] >= cfg.ns_threshold).any(axis=0))
    margin = 4 + math.ceil(4 * cfg.px(cfg.hv_smooth_sigma_um, mpp))
    h, w = ns.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)))


@dataclass(frozen=True)
class ChunkResult:
    index: int
    table: pa.Table
    inferred: bool  # False: no inferred pixel in the window, skipped unsegmented
    n_edge_cut: int


def process_chunk(ctx: MapsContext, win: ChunkWindow) -> ChunkResult:
    """Segment one window and return the rows of the nuclei this chunk owns."""
    maps = _read_window(ctx, win)
    if maps is None:
        return ChunkResult(win.index, ctx.schema().empty_table(), False, 0)
    ns, hv, nc = maps
    box = foreground_box(ns, ctx.postproc, ctx.mpp)
    inst_map: np.ndarray = np.zeros(ns.shape, np.int32)
    if box is None:
        return ChunkResult(win.index, ctx.schema().empty_table(), True, 0)
    seg = segment_instances(ns[box], hv[(slice(None), *box)], nc[(slice(None), *box)],
                            mpp=ctx.mpp, config=ctx.postproc)
    inst_map[box] = seg.inst_map
    owned = owned_nuclei(inst_map, win, ctx.map_hw)
    if owned.labels.size == 0:
        return ChunkResult(win.index, ctx.schema().empty_table(), True, owned.n_edge_cut)
    lab = owned.labels
    # Measure only the owned nuclei: relabel them 1..K (in id order), everything else 0.
    lut = np.zeros(int(inst_map.max()) + 1, dtype=np.int32)
    lut[lab] = np.arange(1, lab.size + 1, dtype=np.int32)
    owned_map = lut[inst_map]
    od = None
    if ctx.od is not None:
        rgb = window_rgb(ctx.od, win.win_r0, win.win_c0, inst_map.shape, ctx.mpp, ctx.scale)
        od = nucleus_od_stats(owned_map, rgb, lab.size, ctx.od)
    # Outlines are traced in global map pixels (window offsets are integers), so every chunk
    # that sees a nucleus computes bit-identical vertices and simplification (whose tolerance
    # ties on pixel-staircase outlines) decides the same way whatever the chunking; x, y are
    # the exact integer-sum centroids ownership used.
    table = nucleus_table(
        owned_map,
        np.asarray(seg.types)[lab - 1],
        np.asarray(seg.type_probs, dtype=np.float32)[lab - 1],
        class_names=ctx.class_names, mpp=ctx.mpp, level0_mpp=ctx.slide_mpp, scale=ctx.scale,
        origin_xy=ctx.origin_xy, offset_rc=(win.win_r0, win.win_c0), moments=owned,
        nucleus_ids=nucleus_ids(owned, ctx.map_hw[1]), simplify_px=ctx.simplify_px,
        optical_density=od,
    )
    return ChunkResult(win.index, table, True, owned.n_edge_cut)
