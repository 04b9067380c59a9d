"""Slide-level post-processing: maps.zarr → nuclei.parquet, one chunk at a time.

Each zarr chunk plus a halo is segmented as an independent task (on the run's Dask cluster,
or on this machine's worker processes, `postproc.pool`); every task returns
only the table rows of the nuclei its core owns (see `seams`), never a label image, so
memory depends on the chunk size, not on the slide. Rows are written in chunk order as
results arrive, so the file is identical whatever the scheduler or the number of workers.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zarr
from tqdm.auto import tqdm

from wsi_pipeline import __version__
from wsi_pipeline.contract import ARRAY_NS, MapsAttrs
from wsi_pipeline.geoparquet import geoparquet_schema, open_geoparquet
from wsi_pipeline.maps_store import maps_array
from wsi_pipeline.postproc.chunks import ChunkResult, MapsContext, chunk_windows, process_chunk
from wsi_pipeline.postproc.config import ChunkingConfig, PostprocConfig
from wsi_pipeline.postproc.od import SlidePixels, slide_pixels
from wsi_pipeline.postproc.pool import ordered_map
from wsi_pipeline.postproc.window import ChunkWindow

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

@dataclass
class PostprocResult:
    out_path: Path
    n_nuclei: int
    n_chunks: int
    n_chunks_segmented: int  # chunks with inferred pixels; the rest were skipped unread
    n_edge_cut: int  # nucleus pieces cut by a halo edge in their owner chunk (0 unless halo too small)
    seconds: float
    counts_by_type: dict[str, int] = field(default_factory=dict)


def _maps_context(
    maps_zarr: Path, cfg: PostprocConfig, chunking: ChunkingConfig
) -> tuple[MapsContext, MapsAttrs, tuple]:
    group = zarr.open_group(str(maps_zarr), mode="r")
    attrs = MapsAttrs.from_attrs(group.attrs.asdict(), maps_zarr)
    ns = maps_array(group, ARRAY_NS)
    map_h, map_w = ns.shape
    ctx = MapsContext(
        maps_path=str(maps_zarr),
        map_hw=(int(map_h), int(map_w)),
        mpp=float(attrs.mpp),
        slide_mpp=float(attrs.slide_mpp),
        scale=float(attrs.scale),
        origin_xy=(float(attrs.origin[0]), float(attrs.origin[1])),
        class_names=attrs.class_names,
        simplify_px=chunking.simplify_px,
        postproc=cfg,
    )
    return ctx, attrs, tuple(int(v) for v in ns.chunks)


def _provenance(attrs: MapsAttrs, cfg: PostprocConfig, chunking: ChunkingConfig,
                chunk_hw: tuple[int, ...], od: SlidePixels | None = None) -> dict:
    """The table's `wsi_pipeline` metadata: with the maps' attributes that export needs
    (contract.TABLE_KEYS, read back by wsi_pipeline.export.table_meta), so that export runs
    without maps.zarr; with optical densities on, how they were measured (absent when off, so
    the table is as before)."""
    extra = {} if od is None else {"optical_density": {
        "stains": ["hematoxylin", "eosin", "residual"], "stain_matrix": [list(r) for r in od.matrix],
        "background": list(od.background), "od": "log10", "slide": od.path}}
    return {
        "wsi_pipeline_version": __version__,
        **attrs.table_metadata(),
        "postproc_config": cfg.settings(),
        "chunking_config": chunking.model_dump(mode="json"),
        "chunk_hw": list(chunk_hw),
        "coordinates": "x, y and geometry in level-0 slide pixels; *_um in microns",
        **extra,
    }


def _slide_pixels(attrs: MapsAttrs, cfg: PostprocConfig, slide_path: str | Path | None,
                  reader: str) -> SlidePixels:
    """Where the chunk tasks read the slide for the optical densities: checked here, once,
    so that a moved or replaced slide is one clear error rather than one per chunk."""
    recorded = attrs.slide or {}
    path = Path(slide_path if slide_path is not None else recorded.get("path", ""))
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: slide not found; postproc.optical_density reads the slide's pixels (the path "
            "comes from maps.zarr's `slide` attribute, where inference read it)")
    size = recorded.get("size")
    if size and path.stat().st_size != size:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, not the {size} that inference read: "
                         "the slide changed since its maps were made; rerun inference")
    return slide_pixels(cfg.optical_density, path.resolve(), float(attrs.slide_mpp), reader)


def _results_local(
    ctx: MapsContext, windows: list[ChunkWindow], workers: int
) -> Iterator[ChunkResult]:
    """This machine's worker processes (`postproc.pool`), in chunk order."""
    return ordered_map(partial(process_chunk, ctx), windows, workers)


def _results_client(
    ctx: MapsContext, windows: list[ChunkWindow], client: Client
) -> Iterator[ChunkResult]:
    """Tasks on a Dask cluster; results come back in completion order and are released."""
    from distributed import as_completed

    futures = client.map(partial(process_chunk, ctx), windows, pure=False)
    for fut in as_completed(futures):
        result = fut.result()
        fut.release()
        yield result


class _OrderedWriter:
    """Writes chunk tables in chunk-index order, in row groups of a fixed size."""

    def __init__(self, writer: pq.ParquetWriter, row_group_rows: int):
        self._writer = writer
        self._rows = row_group_rows
        self._pending: dict[int, pa.Table] = {}
        self._next = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def add(self, index: int, table: pa.Table) -> None:
        self._pending[index] = table
        while self._next in self._pending:
            t = self._pending.pop(self._next)
            self._next += 1
            if t.num_rows:
                self._buffer.append(t)
                self._buffered += t.num_rows
            if self._buffered >= self._rows:
                self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        n_full = table.num_rows if final else (table.num_rows // self._rows) * self._rows
        if n_full:
            self._writer.write_table(table.slice(0, n_full), row_group_size=self._rows)
        rest = table.slice(n_full)
        self._buffer = [rest] if rest.num_rows else []
        self._buffered = rest.num_rows

    def close(self) -> None:
        self._flush(final=True)


def postprocess_slide(
    maps_zarr: Path,
    out_parquet: Path,
    cfg: PostprocConfig,
    client: Client | None = None,
    progress: bool = True,
    *,
    chunking: ChunkingConfig | None = None,
    on_chunks: Callable[[int, int], None] | None = None,
    slide_path: str | Path | None = None,
    reader: str = "auto",
) -> PostprocResult:
    """Segment every chunk of `maps_zarr` and write the slide's nuclei as GeoParquet.

    `on_chunks(done, total)` is called as chunks are collected, before each chunk's rows go
    to the table: the last call (done == total) comes with every other chunk's rows given to
    the table writer (full row groups in its temporary file), before it is closed and
    renamed, and an exception it raises fails the slide there (`cohort.tasks.STAGE_PROGRESS`
    relies on both). With `cfg.optical_density.enabled` the chunks also read the slide
    (`slide_path`, default the path maps.zarr records; `reader`: io.open_slide's)
    for the OD columns."""
    t0 = time.perf_counter()
    chunking = chunking or ChunkingConfig()
    maps_zarr, out_parquet = Path(maps_zarr), Path(out_parquet)
    ctx, attrs, chunk_hw = _maps_context(maps_zarr, cfg, chunking)
    if cfg.optical_density.enabled:
        ctx = replace(ctx, od=_slide_pixels(attrs, cfg, slide_path, reader))
    halo_px = math.ceil(chunking.halo_um / ctx.mpp)
    windows = chunk_windows(ctx.map_hw, chunk_hw, halo_px)
    log.info(
        "post-processing %s: map %s, %d chunks of %s, halo %d px",
        maps_zarr, ctx.map_hw, len(windows), chunk_hw, halo_px,
    )
    if client is None:
        results = _results_local(ctx, windows, chunking.local_workers())
    else:
        results = _results_client(ctx, windows, client)

    schema = geoparquet_schema(
        ctx.schema(), {"wsi_pipeline": _provenance(attrs, cfg, chunking, chunk_hw, ctx.od)})
    counts: Counter[str] = Counter()
    n_nuclei = n_segmented = n_edge_cut = 0
    with open_geoparquet(out_parquet, schema) as writer:
        ordered = _OrderedWriter(writer, chunking.row_group_rows)
        for n_done, res in enumerate(tqdm(results, total=len(windows), desc="postproc",
                                          disable=not progress), start=1):
            if on_chunks is not None:
                on_chunks(n_done, len(windows))
            ordered.add(res.index, res.table)
            n_nuclei += res.table.num_rows
            n_segmented += res.inferred
            n_edge_cut += res.n_edge_cut
            for vc in pc.value_counts(res.table.column("type_name")).to_pylist():
                counts[vc["values"]] += vc["counts"]
        ordered.close()
        if n_nuclei == 0:
            writer.write_table(schema.empty_table())
    if n_edge_cut:
        log.warning(
            "%d nucleus pieces were cut by a halo edge and dropped: raise halo_um (now %.1f)",
            n_edge_cut, chunking.halo_um,
        )
    result = PostprocResult(
        out_path=out_parquet,
        n_nuclei=n_nuclei,
        n_chunks=len(windows),
        n_chunks_segmented=n_segmented,
        n_edge_cut=n_edge_cut,
        seconds=time.perf_counter() - t0,
        counts_by_type=dict(sorted(counts.items())),
    )
    log.info("%d nuclei from %d/%d chunks in %.1f s", n_nuclei, n_segmented, len(windows),
             result.seconds)
    return result
