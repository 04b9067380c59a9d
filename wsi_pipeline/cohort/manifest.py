"""OUT/manifest.parquet: one row per slide, rebuilt from the stage markers on disk.

The markers are the truth (workers write them as stages finish, even when the driver dies);
the manifest is a table view of them, rewritten atomically whenever a slide changes state.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from wsi_pipeline import __version__
from wsi_pipeline.atomic import write_bytes_atomic
from wsi_pipeline.cohort.discover import SlideEntry, printable_path
from wsi_pipeline.cohort.stages import STAGES, SlideStages

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MANIFEST = "manifest.parquet"
STATUSES = ("done", "failed", "no_tissue", "pending")

SCHEMA = pa.schema(
    [
        ("slide_id", pa.string()),
        ("path", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),
        ("failed_stage", pa.string()),
        ("error_type", pa.string()),
        ("error", pa.string()),
        *[(f"{s}_s", pa.float64()) for s in STAGES],
        ("tissue_mm2", pa.float64()),
        ("n_tiles", pa.int64()),
        ("n_nuclei", pa.int64()),
        ("mpp", pa.float64()),  # level-0 µm/px the slide was (or will be) processed at
        ("mpp_source", pa.string()),  # metadata, objective_power, fallback, override, csv
        ("qc", pa.string()),  # plausibility flags joined with ";" ("" = none; wsi_pipeline.export.qc)
        ("model_sha256", pa.string()),
        ("config_hash", pa.string()),
        ("wsi_pipeline_version", pa.string()),
        ("log", pa.string()),
    ]
)


def slide_row(out_dir: Path, entry: SlideEntry, expected: dict[str, str] | None,
              model_sha256: str | None, config_hash: str,
              mpp: tuple[float | None, str | None] = (None, None)) -> dict[str, Any]:
    """The manifest row of one slide from its markers and failure record.

    `expected` holds the per-stage hashes of this run for this slide (None: file unreadable);
    `config_hash` is the run's settings hash, the same for every slide; `mpp` is the pixel
    size and its source this run resolved for the slide, shown until inference records its own.
    """
    stages = SlideStages(out_dir / entry.slide_id)
    markers = {s: stages.read(s) for s in STAGES}
    valid = {
        s: m for s, m in markers.items()
        if m is not None and expected is not None and m.config_hash == expected[s]
        and m.model_sha256 == model_sha256
    }
    failure = stages.read_failure()
    if failure is not None and expected is not None and failure.get("stage_hash") != expected["export"]:
        failure = None  # a failure under other settings says nothing about this run
    try:
        size = entry.path.stat().st_size
    except OSError:
        size = None
    infer_result = valid["infer"].result if "infer" in valid else {}
    post_result = valid["postproc"].result if "postproc" in valid else {}
    export_result = valid["export"].result if "export" in valid else {}
    if len(valid) == len(STAGES):
        status = "no_tissue" if infer_result.get("no_tissue") else "done"
    elif failure is not None:
        status = "failed"
    else:
        status = "pending"
    failed = failure if status == "failed" and failure is not None else {}
    row: dict[str, Any] = {
        "slide_id": entry.slide_id,
        "path": printable_path(entry.path),  # a name that is not UTF-8: escaped, not a crash
        "size_bytes": size,
        "status": status,
        "failed_stage": failed.get("stage"),
        "error_type": failed.get("error_type"),
        "error": failed.get("error"),
        "tissue_mm2": infer_result.get("tissue_mm2"),
        "n_tiles": infer_result.get("n_tiles"),
        "n_nuclei": post_result.get("n_nuclei"),
        "mpp": infer_result.get("mpp", mpp[0]),
        "mpp_source": infer_result.get("mpp_source", mpp[1]),
        "qc": export_result.get("qc"),
        "model_sha256": model_sha256,
        "config_hash": config_hash,
        "wsi_pipeline_version": (valid[STAGES[-1]].version if len(valid) == len(STAGES) else __version__),
        "log": str(Path("logs") / f"{entry.slide_id}.log"),
    }
    for s in STAGES:
        row[f"{s}_s"] = valid[s].seconds if s in valid else None
    return row


def _int_dtypes(table: pa.Table) -> pd.DataFrame:
    """`table` as pandas with nullable integers (Int64): a slide without a count reads <NA>,
    never turning the whole column into float64."""
    import pandas as pd

    mapper = {pa.int64(): pd.Int64Dtype()}
    return table.to_pandas(types_mapper=mapper.get)


def write_manifest(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    # With pandas metadata naming Int64 for the integer columns, pandas.read_parquet (and
    # read_manifest) keep n_tiles, n_nuclei and size_bytes integers when a slide failed.
    table = pa.Table.from_pandas(_int_dtypes(table), schema=SCHEMA, preserve_index=False)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = out_dir / MANIFEST
    write_bytes_atomic(path, buf.getvalue(), fsync=True)
    return path


def known_ids(out_dir: Path) -> dict[str, str]:
    """path -> slide id of every slide OUT's manifest lists ({} without a readable one): the
    ids discovery keeps (`discover(known_ids=...)`), so that an id never changes."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        table = pq.read_table(path, columns=["path", "slide_id"]).to_pylist()
    except Exception as exc:  # noqa: BLE001 - a damaged manifest is rebuilt; ids from the rules
        log.warning("%s cannot be read (%s): slide ids come from the naming rules alone", path, exc)
        return {}
    return {r["path"]: r["slide_id"] for r in table if r["path"] and r["slide_id"]}


def read_manifest(out_dir: Path) -> pd.DataFrame:
    """The manifest as a pandas DataFrame (integer columns as nullable Int64, also for
    manifests written before they carried pandas metadata)."""
    return _int_dtypes(pq.read_table(Path(out_dir) / MANIFEST))
