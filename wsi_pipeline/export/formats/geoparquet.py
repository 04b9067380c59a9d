"""GeoParquet: nuclei.parquet's own format, for an image's table in tile mode (`<stem>.parquet`).

A slide's nuclei.parquet is written by post-processing through the same writer
(`wsi_pipeline.geoparquet`), so the files read alike: ``geopandas.read_parquet``, DuckDB.
"""

from __future__ import annotations

from pathlib import Path

from wsi_pipeline.export.formats.base import Nuclei, OutputFormat
from wsi_pipeline.geoparquet import geoparquet_schema, open_geoparquet


class GeoParquetFormat(OutputFormat):
    """The table as GeoParquet, with the nuclei's provenance as `wsi_pipeline` metadata."""

    name = "geoparquet"
    suffix = ".parquet"

    def write(self, nuclei: Nuclei, path: Path) -> int:
        base = nuclei.schema.remove_metadata()
        schema = geoparquet_schema(base, {"wsi_pipeline": nuclei.provenance})
        n = 0
        with open_geoparquet(path, schema) as writer:
            for batch in nuclei.read(None):
                writer.write_batch(batch.cast(base) if batch.schema != base else batch)
                n += batch.num_rows
            if n == 0:
                writer.write_table(schema.empty_table())
        return n
