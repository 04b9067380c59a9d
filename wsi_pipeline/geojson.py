"""Nucleus table → gzipped GeoJSON that QuPath imports as detection objects.

QuPath (≥ 0.4) reads a FeatureCollection whose features carry `properties.objectType`
("detection"), a `classification` {name, color [r, g, b]} and a `measurements` mapping.
Coordinates stay in level-0 pixels, which is QuPath's image space. Written batch by batch
so that memory does not grow with the number of nuclei.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from wsi_pipeline.atomic import atomic_path

MEASUREMENT_COLUMNS = ("area_um2", "perimeter_um", "eccentricity", "solidity", "type_prob")


def hex_to_rgb(color: str) -> list[int]:
    """'#rrggbb' → [r, g, b]."""
    h = color.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"not a #rrggbb colour: {color!r}")
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)]


def _features(batch: pa.RecordBatch, classifications: dict[int, str], decimals: int) -> Iterator[str]:
    """One serialised Feature per row of a nucleus batch (geometry as WKB, nucleus_id, type_id,
    and whichever measurement and prob_* columns it has)."""
    geoms = shapely.set_precision(shapely.from_wkb(batch.column("geometry").to_numpy(False)),
                                  10.0**-decimals, mode="pointwise")
    geo_json = shapely.to_geojson(geoms)
    prob_cols = [c for c in batch.schema.names if c.startswith("prob_")]
    meas_cols = [c for c in (*MEASUREMENT_COLUMNS, *prob_cols) if c in batch.schema.names]
    values = {c: np.round(batch.column(c).to_numpy(False).astype(np.float64), 4) for c in meas_cols}
    ids = batch.column("nucleus_id").to_numpy(False)
    type_ids = batch.column("type_id").to_numpy(False)
    for i in range(batch.num_rows):
        measurements = {"nucleus_id": int(ids[i])}
        measurements.update({c: float(values[c][i]) for c in meas_cols})
        yield (
            '{"type":"Feature","geometry":' + geo_json[i]
            + ',"properties":{"objectType":"detection","classification":'
            + classifications[int(type_ids[i])]
            + ',"measurements":' + json.dumps(measurements) + "}}"
        )


def write_feature_collection(
    out_path: Path,
    batches: Iterable[pa.RecordBatch],
    class_names: Sequence[str],
    class_colors: Sequence[str],
    *,
    decimals: int = 2,
) -> int:
    """Stream nucleus batches into `out_path` (.geojson.gz) atomically; returns the feature count.

    Each batch needs `geometry` (WKB polygons), `nucleus_id` and `type_id`; measurement columns
    (MEASUREMENT_COLUMNS, prob_*) are copied where present. Coordinates are written as given.
    """
    classifications = {
        k: json.dumps({"name": name, "color": hex_to_rgb(color)})
        for k, (name, color) in enumerate(zip(class_names, class_colors, strict=True))
    }
    n = 0
    with atomic_path(out_path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
        f.write('{"type":"FeatureCollection","features":[')
        for batch in batches:
            for feature in _features(batch, classifications, decimals):
                f.write(("," if n else "") + "\n" + feature)
                n += 1
        f.write("\n]}\n")
    return n


def write_geojson(
    parquet_path: Path,
    out_path: Path,
    class_names: list[str],
    class_colors: list[str],
    *,
    decimals: int = 2,
    batch_rows: int = 65536,
) -> int:
    """Write `out_path` (.geojson.gz) atomically from nuclei.parquet; returns the feature count."""
    batches = pq.ParquetFile(parquet_path).iter_batches(batch_size=batch_rows)
    return write_feature_collection(out_path, batches, class_names, class_colors, decimals=decimals)
