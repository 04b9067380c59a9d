"""GeoParquet, the nucleus table's file format: its `geo` metadata and its writer, in one place.

Written by post-processing (a slide's nuclei.parquet, streamed chunk by chunk) and by the
`geoparquet` output format (`export.formats`, an image's table in tile mode). Coordinates are
level-0 (or image) pixels, so no geographic CRS applies (GeoParquet: null = undefined).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from wsi_pipeline.atomic import atomic_path

GEO_METADATA: dict[str, Any] = {
    "version": "1.1.0",
    "primary_column": "geometry",
    "columns": {
        "geometry": {
            "encoding": "WKB",
            "geometry_types": ["Polygon"],
            "crs": None,
            # GeoParquet 1.1 covering: the per-row bounding boxes in the `bbox` struct column.
            "covering": {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}},
        }
    },
}
#: Parquet compression of nucleus tables
COMPRESSION = "zstd"


def geoparquet_schema(schema: pa.Schema, metadata: Mapping[str, Any]) -> pa.Schema:
    """`schema` with the GeoParquet `geo` metadata and each of `metadata` as JSON."""
    return schema.with_metadata({"geo": json.dumps(GEO_METADATA),
                                 **{k: json.dumps(v) for k, v in metadata.items()}})


@contextmanager
def open_geoparquet(path: Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A Parquet writer of `schema` (from `geoparquet_schema`) whose file appears at `path`
    only when the block ends without an error (`atomic.atomic_path`)."""
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression=COMPRESSION) as writer:
        yield writer
