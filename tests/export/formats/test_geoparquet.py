"""The GeoParquet format: an image's table read back as a slide's nuclei.parquet reads."""

from __future__ import annotations

import json

import geopandas as gpd
import pyarrow as pa
import pyarrow.parquet as pq

from wsi_pipeline.export.formats.base import output_format
from wsi_pipeline.geoparquet import GEO_METADATA


def test_geoparquet_round_trips_with_geo_and_provenance_metadata(nuclei, tmp_path):
    path = tmp_path / "t.parquet"
    n = output_format("geoparquet").write(nuclei, path)
    table = pq.read_table(path)
    want = pa.Table.from_batches(list(nuclei.read(None)))
    assert n == table.num_rows == want.num_rows
    assert table.drop_columns([]).cast(want.schema).equals(want)
    meta = table.schema.metadata
    assert json.loads(meta[b"geo"]) == GEO_METADATA
    assert json.loads(meta[b"wsi_pipeline"])["model_sha256"] == "ab" * 32
    frame = gpd.read_parquet(path)
    assert len(frame) == n and frame.geometry.geom_type.eq("Polygon").all()
