"""QuPath GeoJSON (`.geojson.gz`): detections, or cell objects with `export.geojson_cells`.

The features are built by `export.geojson` (classification, measurements, stable UUIDs,
valid rounded outlines); this module chooses the rows and the options.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.contract import OD_COLUMNS, PROB_PREFIX
from wsi_pipeline.export.formats.base import Nuclei, OutputFormat
from wsi_pipeline.export.geojson import MEASUREMENT_COLUMNS, CellMaker, write_feature_collection


class GeoJSONFormat(OutputFormat):
    """QuPath's import format; coordinates in level-0 (image) pixels, QuPath's image space."""

    name = "geojson"
    suffix = ".geojson.gz"

    def write(self, nuclei: Nuclei, path: Path) -> int:
        wanted = {"geometry", "nucleus_id", "type_id", *MEASUREMENT_COLUMNS, *OD_COLUMNS}
        columns = [c for c in nuclei.schema.names if c in wanted or c.startswith(PROB_PREFIX)]
        maker = None
        if self.settings.geojson_cells:  # every outline at once: cells are split between neighbours
            wkb = np.concatenate([b.column("geometry").to_numpy(False)
                                  for b in nuclei.read(["geometry"])] or [np.empty(0, object)])
            maker = CellMaker(wkb, self.settings.cell_expansion_um / nuclei.level0_mpp)
        return write_feature_collection(path, nuclei.read(columns), nuclei.class_names,
                                        nuclei.class_colors, slide_id=nuclei.source_id,
                                        decimals=self.settings.geojson_decimals, cell_maker=maker)
