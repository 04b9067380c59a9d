"""Export stage: nuclei.parquet → summary.json, overlay.png, the QC sheet (qc/) and the
configured output formats (nuclei.geojson.gz, nuclei.csv: `export.formats`).

Everything is derived from the slide folder the earlier stages wrote (nuclei.parquet and its
metadata, tissue.png, tissue.json, stages/*.json) and the slide file for the QC sheet's crops,
so export can be rerun on its own, also after maps.zarr was deleted to save space (see
table_meta.py). The table is read in batches: memory stays flat whatever the number of nuclei.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wsi_pipeline import __version__
from wsi_pipeline.atomic import write_text_atomic
from wsi_pipeline.contract import (
    FORMAT_FILES,
    NUCLEI,
    OVERLAY,
    QC_DIR,
    STAGES_DIR,
    SUMMARY,
    TISSUE_JSON,
    TISSUE_PNG,
    MapsAttrs,
)
from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.export.formats.base import Nuclei, output_format
from wsi_pipeline.export.overlay import render_overlay
from wsi_pipeline.export.qc import QCStats, describe, qc_report
from wsi_pipeline.export.qc_sheet import SlideGeometry, render_qc_sheet
from wsi_pipeline.export.table_meta import slide_attributes, table_provenance

log = logging.getLogger(__name__)


def _stage_timings(slide_dir: Path) -> dict[str, float]:
    """Seconds per finished stage, from the done-markers in stages/ (absent: not recorded)."""
    out: dict[str, float] = {}
    for marker in sorted((slide_dir / STAGES_DIR).glob("*.json")):
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data.get("seconds"), int | float):
            out[data.get("stage", marker.stem)] = float(data["seconds"])
    return out


def _tissue_mm2(slide_dir: Path, attrs: MapsAttrs) -> float:
    if attrs.tissue_mm2 is not None:
        return float(attrs.tissue_mm2)
    tissue_json = slide_dir / TISSUE_JSON
    if tissue_json.is_file():
        return float(json.loads(tissue_json.read_text(encoding="utf-8")).get("mm2", 0.0))
    return 0.0


def _tissue_json(slide_dir: Path) -> dict:
    """tissue.json's content ({} when absent or unreadable): its hole rule goes into summary.json."""
    try:
        return json.loads((slide_dir / TISSUE_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _type_stats(parquet_path: Path, batch_rows: int, qc: QCStats | None = None
                ) -> tuple[Counter, dict[str, float]]:
    """Counts and summed areas per type, one column scan (that also feeds the QC statistics)."""
    counts: Counter[str] = Counter()
    areas: dict[str, float] = {}
    pf = pq.ParquetFile(parquet_path)
    columns = ["type_name", "area_um2"] + (["type_prob"] if qc is not None else [])
    for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
        names = batch.column("type_name")
        area = batch.column("area_um2").to_numpy(False).astype(np.float64)
        if qc is not None:
            qc.add(area, batch.column("type_prob").to_numpy(False))
        for vc in pc.value_counts(names).to_pylist():
            counts[vc["values"]] += vc["counts"]
        codes = pc.dictionary_encode(names)
        keys = codes.dictionary.to_pylist()
        sums = np.bincount(codes.indices.to_numpy(False), weights=area, minlength=len(keys))
        for key, value in zip(keys, sums, strict=True):
            areas[key] = areas.get(key, 0.0) + float(value)
    return counts, areas


@dataclass(frozen=True)
class _TypeSummary:
    """What the table says per type: the nucleus count, per-type figures and the QC report."""

    n_total: int
    per_type: dict[str, dict]
    qc: dict


@dataclass
class _Written:
    """What the picture and GeoJSON steps wrote: for summary.json."""

    overlay_mpp: float
    qc_sheet: dict | None
    outputs: list[str]
    timings: dict[str, float]


def export_slide(slide_dir: Path, cfg: ExportConfig) -> dict:
    """Write summary.json, overlay.png and, if configured, nuclei.geojson.gz; return the summary."""
    t0 = time.perf_counter()
    slide_dir = Path(slide_dir)
    parquet_path = slide_dir / NUCLEI
    table_prov = table_provenance(parquet_path)
    attrs = slide_attributes(slide_dir, table_prov)  # maps.zarr's attributes, from the table
    class_names = list(attrs.class_names)
    class_colors = list(attrs.class_colors)
    tissue_mm2 = _tissue_mm2(slide_dir, attrs)

    types = _summarize_types(slide_dir, parquet_path, class_names, tissue_mm2, cfg)
    timings = _stage_timings(slide_dir)
    written = _write_pictures(slide_dir, attrs, class_names, class_colors, tissue_mm2, cfg)
    _write_formats(slide_dir, attrs, class_names, class_colors, cfg, written)
    timings["export"] = time.perf_counter() - t0

    summary = _summary(slide_dir, cfg, attrs, table_prov, tissue_mm2, types, timings, written)
    write_text_atomic(slide_dir / SUMMARY, json.dumps(summary, indent=2, sort_keys=False) + "\n")
    log.info("exported %s: %d nuclei, %.2f mm² tissue", slide_dir.name, types.n_total, tissue_mm2)
    return summary


def _summarize_types(slide_dir: Path, parquet_path: Path, class_names: list[str], tissue_mm2: float,
                     cfg: ExportConfig) -> _TypeSummary:
    """Counts, densities and mean areas per type and the QC report, from one column scan; QC
    flags are logged."""
    qc_stats = QCStats(low_type_prob=cfg.qc.low_type_prob)
    counts, areas = _type_stats(parquet_path, cfg.batch_rows, qc_stats)
    n_total = sum(counts.values())
    qc = qc_report(qc_stats, tissue_mm2, cfg.qc)
    if qc["flags"]:
        log.warning("%s: QC: %s", slide_dir.name, describe(qc))
    per_type = {
        name: {
            "count": counts.get(name, 0),
            "per_mm2": counts.get(name, 0) / tissue_mm2 if tissue_mm2 > 0 else None,
            "mean_area_um2": areas[name] / counts[name] if counts.get(name) else None,
        }
        for name in class_names[1:]
    }
    return _TypeSummary(n_total, per_type, qc)


def _write_pictures(slide_dir: Path, attrs: MapsAttrs, class_names: list[str], class_colors: list[str],
                    tissue_mm2: float, cfg: ExportConfig) -> _Written:
    """overlay.png, then (if enabled) the QC sheet in qc/, each timed."""
    parquet_path = slide_dir / NUCLEI
    outputs = [NUCLEI, OVERLAY, SUMMARY]
    t_overlay = time.perf_counter()
    overlay_mpp = render_overlay(
        parquet_path,
        slide_dir / OVERLAY,
        level0_wh=attrs.level0_size,
        slide_mpp=float(attrs.slide_mpp),
        slide_path=(attrs.slide or {}).get("path"),
        tissue_png=slide_dir / TISSUE_PNG,
        class_colors=class_colors,
        max_px=cfg.overlay_max_px,
        contour_min_px=cfg.overlay_contour_min_px,
        batch_rows=cfg.batch_rows,
    )
    export_timings = {"overlay": time.perf_counter() - t_overlay}
    qc_sheet = None
    if cfg.qc_sheet.enabled:
        t_sheet = time.perf_counter()
        qc_sheet = render_qc_sheet(
            parquet_path,
            slide_dir / QC_DIR,
            geo=SlideGeometry(level0_wh=attrs.level0_size, slide_mpp=float(attrs.slide_mpp),
                              model_mpp=float(attrs.mpp), slide_path=(attrs.slide or {}).get("path")),
            class_names=class_names,
            class_colors=class_colors,
            tissue_png=slide_dir / TISSUE_PNG,
            tissue_mpp=_tissue_json(slide_dir).get("thumb_mpp"),
            cfg=cfg.qc_sheet,
            title=f"{slide_dir.name}, {tissue_mm2:.2f} mm² tissue",
            batch_rows=cfg.batch_rows,
        )
        export_timings["qc_sheet"] = time.perf_counter() - t_sheet
        outputs.insert(-1, QC_DIR)
    return _Written(overlay_mpp, qc_sheet, outputs, export_timings)


def _write_formats(slide_dir: Path, attrs: MapsAttrs, class_names: list[str], class_colors: list[str],
                   cfg: ExportConfig, written: _Written) -> None:
    """nuclei<suffix> in each of the config's output formats (`export.formats`: the GeoJSON,
    with cell outlines if configured; CSV), each timed and listed in `written`."""
    nuclei = Nuclei.from_parquet(slide_dir / NUCLEI, source_id=slide_dir.name, class_names=class_names,
                                 class_colors=class_colors, level0_mpp=float(attrs.slide_mpp),
                                 batch_rows=cfg.batch_rows)
    for k, name in enumerate(cfg.file_formats(), start=1):
        fmt = output_format(name, cfg)
        fmt.check(nuclei)
        t0 = time.perf_counter()
        path = slide_dir / FORMAT_FILES[name]  # nuclei.geojson.gz, nuclei.csv
        fmt.write(nuclei, path)
        written.timings[name] = time.perf_counter() - t0
        written.outputs.insert(k, path.name)  # after nuclei.parquet


def _summary(slide_dir: Path, cfg: ExportConfig, attrs: MapsAttrs, table_prov: dict, tissue_mm2: float,
             types: _TypeSummary, timings: dict[str, float], written: _Written) -> dict:
    """summary.json's content: figures, QC, timings, what was written and where it came from."""
    return {
        "slide": slide_dir.name,
        "status": "ok" if tissue_mm2 > 0 else "no_tissue",
        "tissue_mm2": tissue_mm2,
        "n_nuclei": types.n_total,
        "nuclei_per_mm2": types.n_total / tissue_mm2 if tissue_mm2 > 0 else None,
        "qc": types.qc,
        "per_type": types.per_type,
        "timings_s": timings,
        "export_timings_s": written.timings,
        "slide_mpp": attrs.slide_mpp,
        "slide_mpp_source": attrs.slide_mpp_source,
        "model_mpp": attrs.mpp,
        "level0_size": list(attrs.level0_size),
        "overlay_mpp": written.overlay_mpp,
        "tissue": {"holes": _tissue_json(slide_dir).get("holes")},
        "qc_sheet": written.qc_sheet,
        "outputs": written.outputs,
        "provenance": {
            "model_sha256": attrs.model_sha256,
            "wsi_pipeline_version": __version__,
            "maps_wsi_pipeline_version": attrs.wsi_pipeline_version,
            "input": attrs.slide,
            "stain_normalization": attrs.stain,
            "config": {
                "infer": attrs.config,
                "postproc": table_prov.get("postproc_config"),
                "chunking": table_prov.get("chunking_config"),
                "export": cfg.settings(),
            },
        },
    }
