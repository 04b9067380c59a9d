"""Parameters of the export stage (GeoJSON, overlay, summary)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wsi_pipeline.qc import QCConfig


class ExportConfig(BaseModel):
    """What the export stage writes next to nuclei.parquet, and how."""

    model_config = ConfigDict(extra="forbid")

    geojson: bool = Field(
        False, description="Also write nuclei.geojson.gz (QuPath detections); large for big slides."
    )
    geojson_decimals: int = Field(
        2, ge=0, le=6, description="Decimals kept in GeoJSON coordinates (level-0 pixels)."
    )
    overlay_max_px: int = Field(
        2048, ge=64, description="Longest side of overlay.png; the thumbnail mpp follows from it."
    )
    overlay_contour_min_px: float = Field(
        4.0,
        gt=0,
        description="Draw nucleus outlines when the median nucleus spans at least this many overlay "
        "pixels; below that, a dot per nucleus is all that is visible.",
    )
    batch_rows: int = Field(
        65536, ge=1024, description="Rows read from nuclei.parquet at a time (bounds memory)."
    )
    qc: QCConfig = Field(
        default_factory=QCConfig,
        description="Plausibility bounds; slides outside them are flagged in summary.json and the manifest.",
    )
