"""Plain CSV for R and Excel: one row per nucleus, its centroid, measurements and type.

Every column of the nucleus table but the outline (`geometry`) and its bounding box: the
columns follow the table (`contract.nuclei_schema`), so a column added there appears here.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.export.formats.base import Nuclei, OutputFormat

#: table columns the CSV leaves out: geometry is binary WKB, bbox a struct
NOT_IN_CSV = ("geometry", "bbox")


class CSVFormat(OutputFormat):
    """Comma-separated, a header row, UTF-8; x, y in level-0 (image) pixels, x_um, y_um in µm."""

    name = "csv"
    suffix = ".csv"

    def write(self, nuclei: Nuclei, path: Path) -> int:
        columns = [c for c in nuclei.schema.names if c not in NOT_IN_CSV]
        schema = pa.schema([nuclei.schema.field(c) for c in columns])
        n = 0
        with atomic_path(path) as tmp, pacsv.CSVWriter(tmp, schema) as writer:
            for batch in nuclei.read(columns):
                writer.write_batch(batch)
                n += batch.num_rows
        return n
