"""Slide -> maps.zarr: tissue detection, tiled inference, chunk-aligned Zarr writing.

Three kinds of work overlap: a thread pool reads and resamples tiles (OpenSlide and Pillow
release the GIL), the calling thread batches them through the network, and one writer
thread scatters central crops into in-memory chunk buffers and writes each chunk once, whole,
when its last tile has arrived (no read-modify-write, no races). Memory stays a few chunks
plus a few batches whatever the slide size; see `tiling` for the schedule.

A model trained with stain normalisation gets every tile mapped onto its stain target with ONE
source estimate per slide (pixels pooled over a few tissue tiles): per-tile estimates would
colour overlapping tiles differently and make their predictions disagree at the seams.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.codecs import BloscCodec, Crc32cCodec

from wsi_pipeline import __version__
from wsi_pipeline.contract import (
    ARRAY_HV,
    ARRAY_INFERRED,
    ARRAY_NC,
    ARRAY_NS,
    ARRAY_TISSUE,
    MAPS,
    MAPS_PARTIAL,
    TISSUE_MPP_ATTR,
    MapsAttrs,
)
from wsi_pipeline.inference.config import InferConfig
from wsi_pipeline.inference.geometry import (
    Schedule,
    TileGrid,
    run_pieces,
    schedule,
    tile_mask_coverage,
    tiles_touching_mask,
)
from wsi_pipeline.inference.tissue import TissueResult, detect_tissue, save_tissue
from wsi_pipeline.io import Slide
from wsi_pipeline.maps_store import maps_array
from wsi_pipeline.model import LoadedModel
from wsi_pipeline.model.predictors import Predictor, load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.stain import Normalizer, normalizer_from_meta

log = logging.getLogger(__name__)

STAIN_TILES = 16  # tissue tiles pooled for a slide's stain estimate: stable, yet a second to read
STAIN_MAX_PIXELS = 1 << 20  # pooled pixels beyond this are subsampled (large tiles)


@dataclass
class InferResult:
    maps: Path
    tissue_mm2: float
    n_tiles: int  # tiles touching tissue
    n_runs: int  # forward passes per tile, summed (tiles straddling a chunk-row boundary run twice)
    seconds: float
    no_tissue: bool
    timings: dict[str, float] = field(default_factory=dict)  # busy seconds per activity


@dataclass
class _Geometry:
    slide_mpp: float
    model_mpp: float
    scale: float  # level-0 pixels per map pixel
    grid: TileGrid
    plan: Schedule

    @property
    def origin(self) -> float:
        """Level-0 pixel coordinate (centres at integers) of map pixel 0's centre, per axis.

        Map pixel c covers level-0 [c*s, (c+1)*s) (see `Slide.read_region_at_mpp`), so its
        centre is the point (c + 0.5)*s, i.e. pixel coordinate c*s + (s - 1)/2.
        """
        return (self.scale - 1.0) / 2.0


def infer_slide(slide: Slide, out_dir: Path, cfg: InferConfig, model: LoadedModel,
                progress: bool = True,
                on_tiles: Callable[[int, int], None] | None = None) -> InferResult:
    """Write OUT/maps.zarr (via maps.zarr.partial) and tissue.png/json for one slide.

    `on_tiles(done, total)` is called as tiles are written (a cohort run on Dask reports them
    to the driver's console this way), in the thread that writes them, after their map chunks
    are in maps.zarr.partial; the last call (done == total) comes before the attributes are
    written and the folder renamed, and an exception it raises fails the slide there
    (`cohort.tasks.STAGE_PROGRESS` relies on both)."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slide_mpp = slide.mpp  # MissingMppError before any work
    model_mpp = float(model.mpp)
    scale = model_mpp / slide_mpp
    width, height = slide.size_at_mpp(model_mpp)

    t0 = time.perf_counter()
    thumb_mpp = cfg.tissue.thumb_mpp
    tissue = detect_tissue(slide.thumbnail_at_mpp(thumb_mpp), thumb_mpp, cfg.tissue)
    save_tissue(tissue, out_dir)
    timings = {"tissue": time.perf_counter() - t0}

    grid = TileGrid(height, width, cfg.tile_size, cfg.effective_stride)
    selected = tiles_touching_mask(grid, tissue.mask, model_mpp / thumb_mpp)
    plan = schedule(grid, selected, cfg.chunk_size)
    geo = _Geometry(slide_mpp, model_mpp, scale, grid, plan)
    n_tiles = int(selected.sum())
    log.info("%s: %d x %d map px at %.3g um/px, %.3f mm2 tissue, %d tiles (+%d runs: a tile "
             "straddling chunk rows runs once per row)", slide.path.name, width, height, model_mpp,
             tissue.mm2, n_tiles, len(plan) - n_tiles)
    stain, stain_record = None, None
    normalizer = normalizer_from_meta(model.meta.get("stain"))
    if normalizer is not None:
        t0 = time.perf_counter()
        stain, stain_record = _slide_stain(slide, geo, tissue, normalizer)
        timings["stain"] = time.perf_counter() - t0

    partial = out_dir / MAPS_PARTIAL
    if partial.exists():
        shutil.rmtree(partial)
    group = _create_maps(partial, geo, cfg, model)
    _write_tissue(group, tissue.mask, tissue.mpp, cfg)
    if len(plan):
        timings.update(_run_pipeline(slide, group, geo, cfg, model, progress, stain, on_tiles))
    group.attrs.update(_attributes(slide, geo, cfg, model, tissue.mm2, stain_record).to_attrs())

    final = out_dir / MAPS
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    return InferResult(
        maps=final, tissue_mm2=tissue.mm2, n_tiles=int(selected.sum()), n_runs=len(plan),
        seconds=time.perf_counter() - t_start, no_tissue=not bool(selected.any()), timings=timings,
    )


def _create_maps(path: Path, geo: _Geometry, cfg: InferConfig, model: LoadedModel) -> zarr.Group:
    h, w, c = geo.grid.height, geo.grid.width, cfg.chunk_size
    n_types = model.config.n_types
    group = zarr.open_group(str(path), mode="w", zarr_format=3)

    def create(name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
               shuffle: Literal["shuffle", "noshuffle"], fill: object) -> None:
        codec = BloscCodec(cname=cfg.compressor, clevel=cfg.compression_level, shuffle=shuffle)
        # crc32c after compression: a damaged chunk fails its checksum before the decompressor
        # sees it (cohort.integrity checks every chunk before a rerun trusts the maps).
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                           compressors=[codec, Crc32cCodec()])

    create(ARRAY_NS, (h, w), (c, c), "float16", "shuffle", 0.0)
    create(ARRAY_HV, (2, h, w), (2, c, c), "float16", "shuffle", 0.0)
    create(ARRAY_NC, (n_types, h, w), (n_types, c, c), "uint8", "noshuffle", 0)
    create(ARRAY_INFERRED, (h, w), (c, c), "bool", "noshuffle", False)
    return group


def _write_tissue(group: zarr.Group, mask: np.ndarray, mpp: float, cfg: InferConfig) -> None:
    """The tissue mask that chose the tiles (dilated, at `tissue_mpp`), kept with the maps so
    later stages and viewers need not re-detect it or trust tissue.png to still match."""
    codec = BloscCodec(cname=cfg.compressor, clevel=cfg.compression_level, shuffle="noshuffle")
    side = max(1, min(cfg.chunk_size, max(mask.shape)))
    array = group.create_array(ARRAY_TISSUE, data=np.ascontiguousarray(mask, dtype=bool),
                               chunks=(side, side), compressors=[codec, Crc32cCodec()])
    array.attrs[TISSUE_MPP_ATTR] = float(mpp)


def _attributes(slide: Slide, geo: _Geometry, cfg: InferConfig, model: LoadedModel,
                tissue_mm2: float, stain: dict | None) -> MapsAttrs:
    stat = slide.path.stat()
    return MapsAttrs(
        mpp=geo.model_mpp,
        slide_mpp=geo.slide_mpp,
        slide_mpp_source=slide.mpp_source,
        scale=geo.scale,
        origin=(geo.origin, geo.origin),
        level0_size=slide.dimensions,
        map_size=(geo.grid.width, geo.grid.height),
        class_names=tuple(model.class_names),
        class_colors=tuple(model.class_colors),
        model_sha256=model.sha256,
        backend=choose_runtime(cfg.device, cfg.precision, cfg.backend).record(),
        model_config=model.config.model_dump(),
        config=cfg.model_dump(mode="json"),
        wsi_pipeline_version=__version__,
        slide={"path": str(slide.path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime},
        tissue_mm2=tissue_mm2,
        tile_grid={"tile": geo.grid.tile, "stride": geo.grid.stride, "margin": geo.grid.offset},
        stain=stain,
    )


def _read_tile(slide: Slide, geo: _Geometry, row: int, col: int) -> np.ndarray:
    """The input pixels of tile (row, col) at the model's mpp."""
    x = float(geo.grid.tile_origin(col)) * geo.scale
    y = float(geo.grid.tile_origin(row)) * geo.scale
    return slide.read_region_at_mpp(x, y, (geo.grid.tile, geo.grid.tile), geo.model_mpp)


def _stain_tiles(coverage: np.ndarray, n: int) -> np.ndarray:
    """(k, 2) rows and columns of up to `n` tiles evenly spaced, in raster order, over those at
    least half on tissue (over all touching tissue where none is): spread over the section,
    mostly tissue rather than glass, and the same on every run."""
    candidates = np.argwhere(coverage >= 0.5)
    if len(candidates) == 0:
        candidates = np.argwhere(coverage > 0)
    if len(candidates) <= n:
        return candidates
    return candidates[np.linspace(0, len(candidates) - 1, n).round().astype(int)]


def _slide_stain(slide: Slide, geo: _Geometry, tissue: TissueResult, normalizer: Normalizer
                 ) -> tuple[Callable[[np.ndarray], np.ndarray] | None, dict]:
    """The slide's one stain transform (None: nothing to normalise, or too little tissue for an
    estimate, with a warning) and its provenance record.

    The source statistics come from full-resolution pixels (at the model's mpp, as the network
    sees them) pooled over up to STAIN_TILES tissue tiles.
    """
    coverage = tile_mask_coverage(geo.grid, tissue.mask, geo.model_mpp / tissue.mpp)
    tiles = _stain_tiles(coverage, STAIN_TILES)
    stats = None
    if len(tiles):
        pixels = np.stack([_read_tile(slide, geo, int(r), int(c)) for r, c in tiles]).reshape(-1, 3)
        step = -(-len(pixels) // STAIN_MAX_PIXELS)  # ceil: 1 for 16 tiles of 256²
        stats = normalizer.source_stats(pixels[::step])
    record = {**normalizer.to_meta(), "n_tiles": len(tiles),
              "source": stats.to_meta() if stats is not None else None}
    if stats is None:
        if len(tiles):
            log.warning("%s: too little tissue in %d tiles to estimate the stain; not stain-normalised",
                        slide.path.name, len(tiles))
        return None, record
    log.info("%s: stain normalisation %s, source statistics from %d tiles: %s",
             slide.path.name, record["method"], len(tiles), record["source"])
    return lambda tile: normalizer.apply(tile, stats), record


def prepared_network(model: LoadedModel, cfg: InferConfig) -> Predictor:
    """The predictor of `model` for `cfg`'s device, precision and back end, prepared once per
    model and settings in a process (`model.predictors.load_predictor`), not once per slide:
    compiling for OpenVINO takes seconds, and a cohort worker keeps its model for every slide."""
    return load_predictor(model, choose_runtime(cfg.device, cfg.precision, cfg.backend))


class _ChunkWriter:
    """Scatters tile crops into chunk buffers; writes each chunk whole when complete."""

    def __init__(self, group: zarr.Group, geo: _Geometry, n_types: int) -> None:
        # buffer keys = array names (ARRAY_NS, ARRAY_HV, ARRAY_NC, ARRAY_INFERRED)
        names = (ARRAY_NS, ARRAY_HV, ARRAY_NC, ARRAY_INFERRED)
        # write_empty_chunks: only chunks that tiles covered are flushed, so zarr's check that a
        # chunk is all fill value, to skip storing it (numpy array_equal over the chunk), never
        # skips one and cost 2-15x the compression itself (benchmarks/maps_write_speed.py).
        self.arrays = {name: maps_array(group, name).with_config({"write_empty_chunks": True})
                       for name in names}
        self.geo = geo
        self.n_types = n_types
        self.remaining = geo.plan.expected.copy()
        self.open: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.write_seconds = 0.0

    def _buffer(self, band: int, ccol: int) -> dict[str, np.ndarray]:
        key = (band, ccol)
        if key not in self.open:
            c, g = self.geo.plan.chunk, self.geo.grid
            h, w = min(c, g.height - band * c), min(c, g.width - ccol * c)
            self.open[key] = {
                "ns": np.zeros((h, w), np.float16),
                "hv": np.zeros((2, h, w), np.float16),
                "nc": np.zeros((self.n_types, h, w), np.uint8),
                "inferred": np.zeros((h, w), bool),
            }
        return self.open[key]

    def add(self, runs: np.ndarray, pred: dict[str, np.ndarray]) -> None:
        t0 = time.perf_counter()
        ns, hv, nc = pred["ns"], pred["hv"], pred["nc"]
        plan, grid = self.geo.plan, self.geo.grid
        for k, run in enumerate(runs):
            band = int(plan.bands[run])
            for p in run_pieces(grid, int(plan.rows[run]), int(plan.cols[run]), band, plan.chunk):
                buf = self._buffer(band, p.chunk_col)
                buf["ns"][p.dst] = ns[k][p.src]
                buf["hv"][(slice(None), *p.dst)] = hv[k][(slice(None), *p.src)]
                buf["nc"][(slice(None), *p.dst)] = nc[k][(slice(None), *p.src)]
                buf["inferred"][p.dst] = True
                self.remaining[band, p.chunk_col] -= 1
                if self.remaining[band, p.chunk_col] == 0:
                    self._flush(band, p.chunk_col)
        self.write_seconds += time.perf_counter() - t0

    def _flush(self, band: int, ccol: int) -> None:
        buf = self.open.pop((band, ccol))
        c = self.geo.plan.chunk
        h, w = buf["ns"].shape
        rows, cols = slice(band * c, band * c + h), slice(ccol * c, ccol * c + w)
        self.arrays["ns"][rows, cols] = buf["ns"]
        self.arrays["hv"][:, rows, cols] = buf["hv"]
        self.arrays["nc"][:, rows, cols] = buf["nc"]
        self.arrays["inferred"][rows, cols] = buf["inferred"]

    def check_complete(self) -> None:
        if self.open or (self.remaining != 0).any():
            raise RuntimeError(f"internal error: {len(self.open)} chunks left unwritten")


def _run_pipeline(slide: Slide, group: zarr.Group, geo: _Geometry, cfg: InferConfig,
                  model: LoadedModel, progress: bool,
                  stain: Callable[[np.ndarray], np.ndarray] | None,
                  on_tiles: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Read (and stain-normalise, counted as reading) -> model -> write, overlapped."""
    predictor = prepared_network(model, cfg)
    plan = geo.plan
    writer = _ChunkWriter(group, geo, model.config.n_types)
    read_seconds = [0.0]
    read_lock = threading.Lock()

    def read(run: int) -> np.ndarray:
        t0 = time.perf_counter()
        pixels = _read_tile(slide, geo, int(plan.rows[run]), int(plan.cols[run]))
        if stain is not None:
            pixels = stain(pixels)
        with read_lock:
            read_seconds[0] += time.perf_counter() - t0
        return pixels

    done: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    # The bar counts tiles, as the log line does: a tile that runs once per chunk row it
    # straddles counts when its last run is written.
    tile_of_run = np.unique(plan.rows.astype(np.int64) * (int(plan.cols.max(initial=0)) + 1)
                            + plan.cols, return_inverse=True)[1]
    runs_left = np.bincount(tile_of_run)
    tiles_done = [0]
    bar = tqdm(total=runs_left.size, unit="tile", desc=slide.path.name, disable=not progress,
               leave=False)

    def write_loop() -> None:
        while (item := done.get()) is not None:
            if errors:
                continue  # drain so the producer never blocks
            try:
                writer.add(*item)
                tiles = tile_of_run[item[0]]
                np.subtract.at(runs_left, tiles, 1)
                finished = int(np.count_nonzero(runs_left[np.unique(tiles)] == 0))
                bar.update(finished)
                tiles_done[0] += finished  # a disabled bar counts nothing
                if on_tiles is not None:
                    on_tiles(tiles_done[0], int(runs_left.size))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                errors.append(exc)

    writer_thread = threading.Thread(target=write_loop, name="zarr-writer", daemon=True)
    writer_thread.start()
    model_seconds = 0.0
    lookahead = cfg.batch_size * 3
    try:
        with ThreadPoolExecutor(cfg.reader_threads, thread_name_prefix="tile-reader") as pool:
            pending: deque = deque()
            next_run = 0
            while next_run < len(plan) or pending:
                while next_run < len(plan) and len(pending) < lookahead:
                    pending.append(pool.submit(read, next_run))
                    next_run += 1
                n = min(cfg.batch_size, len(pending))
                first = next_run - len(pending)
                batch = np.stack([pending.popleft().result() for _ in range(n)])
                t0 = time.perf_counter()
                pred = predictor.predict_compact(batch)
                model_seconds += time.perf_counter() - t0
                if errors:
                    break
                done.put((np.arange(first, first + n), pred))
    finally:
        done.put(None)
        writer_thread.join()
        bar.close()
    if errors:
        raise errors[0]
    writer.check_complete()
    return {"read": read_seconds[0], "model": model_seconds, "write": writer.write_seconds}
