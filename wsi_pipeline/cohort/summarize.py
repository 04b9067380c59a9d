"""Cohort statistics: slide × nucleus type counts, densities and means, plus a composition plot.

Reads only the columns it needs from each finished slide's nuclei.parquet, so it stays quick
on cohorts of millions of nuclei. Every class of the model gets a row per slide (zero counts
included) so that tables of different slides line up.

A slide the manifest calls finished whose nuclei.parquet is gone is left out, by name, never
counted as a slide with no nuclei; `wsi-pipeline run` on the same OUT rebuilds it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from wsi_pipeline.atomic import write_bytes_atomic
from wsi_pipeline.cohort.integrity import quick_problem
from wsi_pipeline.cohort.layout import slide_dir
from wsi_pipeline.cohort.manifest import MANIFEST, read_manifest
from wsi_pipeline.contract import NUCLEI, MapsAttrs
from wsi_pipeline.export.qc import QCConfig
from wsi_pipeline.export.table_meta import slide_attributes

log = logging.getLogger(__name__)

SUMMARY_TABLE = "cohort_summary.parquet"
SUMMARY_PLOT = "cohort_composition.png"
COLUMNS = ["slide_id", "type_id", "type_name", "count", "fraction", "density_per_mm2",
           "mean_area_um2", "mean_type_prob", "low_type_fraction", "mean_background_share",
           "tissue_mm2", "status", "qc"]
#: a nucleus typed with `type_prob` below this counts in `low_type_fraction` (the QC sheets'
#: `export.qc.QCConfig.low_type_prob` default)
LOW_TYPE_PROB = QCConfig().low_type_prob


@dataclass
class CohortSummary:
    table: pd.DataFrame
    table_path: Path
    plot_path: Path | None
    #: Finished slides left out because their nuclei.parquet is missing.
    missing: list[str] = field(default_factory=list)
    #: slide_id -> its QC flags ("a;b"), for the slides that have any (wsi_pipeline.export.qc).
    qc_flagged: dict[str, str] = field(default_factory=dict)
    #: OUT/report.html (wsi_pipeline.cohort.report), None when not asked for.
    report_path: Path | None = None


def summarize_cohort(out_dir: Path, plot: bool = True, report: bool = True) -> CohortSummary:
    """Write OUT/cohort_summary.parquet (and the PNG) from OUT/manifest.parquet's finished slides,
    and the cohort report OUT/report.html (every slide of the manifest, with these plots)."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path}: no manifest: is {out_dir} the output of `wsi-pipeline run`?")
    manifest = read_manifest(out_dir)
    finished = manifest[manifest["status"].isin(["done", "no_tissue"])]
    missing = [sid for sid in finished["slide_id"]
               if not (_folder(out_dir, sid) / NUCLEI).is_file()]
    for sid in missing:
        log.warning("%s: left out of the cohort summary: %s is missing although the manifest "
                    "says the slide is finished (rerun `wsi-pipeline run` with this output folder "
                    "to rebuild it)", sid, _folder(out_dir, sid) / NUCLEI)
    # A damaged table (truncated copy, bit rot in the footer) is named, not a traceback; a
    # rerun of `run` finds it too and rebuilds it from the maps (cohort.integrity).
    for sid in finished["slide_id"]:
        problem = None if sid in missing else quick_problem(_folder(out_dir, sid) / NUCLEI, None)
        if problem is not None:
            log.warning("%s: left out of the cohort summary: %s (rerun `wsi-pipeline run` with this "
                        "output folder to rebuild it)", sid, problem)
            missing.append(sid)
    finished = finished[~finished["slide_id"].isin(missing)]
    qc = _qc_flags(finished)
    records: Iterator[Any] = finished.itertuples()  # named tuples of the manifest's columns
    parts = [_slide_table(_folder(out_dir, r.slide_id), r.slide_id, r.tissue_mm2, r.status)
             .assign(qc=qc[r.slide_id]) for r in records]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
    table = table[COLUMNS].astype({"count": "int64", "type_id": "int64"})
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    table_path = out_dir / SUMMARY_TABLE
    write_bytes_atomic(table_path, buf.getvalue(), fsync=True)
    plot_path = _plot(table, out_dir / SUMMARY_PLOT, _colors(out_dir, finished)) if plot else None
    log.info("cohort summary: %d slides, %d rows -> %s", len(finished), len(table), table_path)
    report_path = None
    if report:
        from wsi_pipeline.cohort.report import write_report

        report_path = write_report(out_dir, table, [plot_path] if plot_path is not None else [])
    return CohortSummary(table=table, table_path=table_path, plot_path=plot_path, missing=missing,
                         qc_flagged={k: v for k, v in qc.items() if v}, report_path=report_path)


def _qc_flags(finished: pd.DataFrame) -> dict[str, str]:
    """Each slide's QC flags from the manifest ("" = none or not judged; older manifests have none)."""
    if "qc" not in finished.columns:
        return {sid: "" for sid in finished["slide_id"]}
    return {sid: (flags if isinstance(flags, str) else "")
            for sid, flags in zip(finished["slide_id"], finished["qc"], strict=True)}


def _folder(out_dir: Path, slide_id: str) -> Path:
    """The slide folder of a manifest row (an unsafe id in a hand-edited manifest is refused)."""
    return slide_dir(out_dir, slide_id)


def _slide_table(slide_dir: Path, slide_id: str, tissue_mm2: float | None, status: str) -> pd.DataFrame:
    names = _class_names(slide_dir)
    parquet = slide_dir / NUCLEI
    have = set(pq.read_schema(parquet).names)
    wanted = ["type_id", "type_name", "area_um2", "type_prob", "prob_background"]
    nuclei = pq.read_table(parquet, columns=[c for c in wanted if c in have]).to_pandas()
    if names is None:
        names = ["background", *sorted(set(nuclei["type_name"]))]
    nuclei["low_type"] = nuclei["type_prob"] < LOW_TYPE_PROB
    if "prob_background" not in nuclei:
        nuclei["prob_background"] = np.nan
    grouped = nuclei.groupby("type_id").agg(count=("area_um2", "size"), mean_area_um2=("area_um2", "mean"),
                                            mean_type_prob=("type_prob", "mean"),
                                            low_type_fraction=("low_type", "mean"),
                                            mean_background_share=("prob_background", "mean"))
    types = pd.DataFrame({"type_id": np.arange(1, len(names)), "type_name": names[1:]})
    table = types.merge(grouped, left_on="type_id", right_index=True, how="left")
    table["count"] = table["count"].fillna(0).astype("int64")
    total = int(table["count"].sum())
    table["fraction"] = table["count"] / total if total else 0.0
    area = float("nan") if tissue_mm2 is None or pd.isna(tissue_mm2) else float(tissue_mm2)
    table["density_per_mm2"] = table["count"] / area if area > 0 else np.nan
    table["tissue_mm2"] = area
    table["slide_id"] = slide_id
    table["status"] = status
    return table


def _slide_attrs(slide_dir: Path) -> MapsAttrs | None:
    """The slide's maps attributes (`export.table_meta.slide_attributes`: nuclei.parquet's
    metadata, which post-processing copies from maps.zarr, so that a slide whose maps were
    deleted to save space summarises the same; maps.zarr's attributes for keys an older table
    lacks), or None when neither holds them readably: the slide then gets no class list."""
    try:
        return slide_attributes(slide_dir)
    except (OSError, ValueError):  # TableMetaError, MapsAttrsError; unreadable table or maps
        return None


def _class_names(slide_dir: Path) -> list[str] | None:
    attrs = _slide_attrs(slide_dir)
    return None if attrs is None else list(attrs.class_names)


def _colors(out_dir: Path, finished: pd.DataFrame) -> dict[str, str]:
    for slide_id in finished["slide_id"]:
        attrs = _slide_attrs(_folder(out_dir, slide_id))
        if attrs is not None:
            return dict(zip(attrs.class_names, attrs.class_colors, strict=False))
    return {}


def _plot(table: pd.DataFrame, path: Path, colors: dict[str, str]) -> Path | None:
    """Stacked horizontal bars: the share of each nucleus type per slide."""
    if table.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = table.pivot_table(index="slide_id", columns="type_name", values="fraction",
                             aggfunc="sum", sort=False).fillna(0.0)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.35 * len(wide)))
    left = np.zeros(len(wide))
    for name in wide.columns:
        ax.barh(wide.index, wide[name], left=left, label=name, color=colors.get(name))
        left += wide[name].to_numpy()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of nuclei")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Nucleus type composition per slide")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue(), fsync=True)
    return path
