"""Parameters of the export stage (GeoJSON, overlay, summary)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsi_pipeline.contract import FORMAT_FILES
from wsi_pipeline.export.qc import QCConfig


class QCSheetConfig(BaseModel):
    """What the QC sheet shows; crops are fixed by these and the nucleus table alone."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Write OUT/<slide>/qc/ (sheet.png, crops, density.png).")
    crop_px: int = Field(384, ge=64, le=1024, description="Side of each crop in pixels.")
    crop_mpp: float | None = Field(
        None, gt=0, description="µm per pixel of the crops; null: the model's (what the network saw)."
    )
    n_spread: int = Field(4, ge=0, le=16, description="Crops spread over the tissue, besides the "
                          "densest and the least confident window.")
    min_tissue_fraction: float = Field(
        0.5, ge=0, le=1, description="A crop window must be at least this much on tissue.")
    min_nuclei_confidence: int = Field(
        5, ge=1, description="The least-confident window must hold at least this many nuclei.")
    outline_px: int = Field(2, ge=1, le=6, description="Width of nucleus outlines on the crops.")
    heatmap_bin_um: float = Field(50.0, gt=0, description="Bin side of the density heat map (µm); "
                                  "coarser on slides too large for 512 bins a side.")
    heatmap_max_px: int = Field(900, ge=128, le=4096,
                                description="Longest side of the heat-map thumbnail.")


class ExportConfig(BaseModel):
    """What the export stage writes next to nuclei.parquet, and how."""

    model_config = ConfigDict(extra="forbid")

    geojson: bool = Field(
        False, description="Also write nuclei.geojson.gz (QuPath detections); large for big slides."
    )
    formats: list[str] = Field(
        default_factory=list,
        description="Files of the nuclei written beside nuclei.parquet, by output format name "
        "(export.formats): geojson (nuclei.geojson.gz, as `geojson: true`), csv (nuclei.csv: one "
        "row per nucleus, centroid and measurements). `run --formats geojson,csv`.",
    )
    geojson_cells: bool = Field(
        False, description="Write the GeoJSON's nuclei as QuPath cell objects: the nucleus expanded "
        "by cell_expansion_um (split between touching neighbours) with the nucleus as its "
        "nucleusGeometry; off: detections (the nucleus outline only)."
    )
    cell_expansion_um: float = Field(
        5.0, gt=0, le=50, description="Cytoplasm ring of a cell object (µm), as QuPath's 'Cell expansion'."
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
    qc_sheet: QCSheetConfig = Field(
        default_factory=QCSheetConfig,
        description="Full-resolution crops with nucleus outlines and a density heat map (OUT/<slide>/qc/).",
    )

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, v: list[str]) -> list[str]:
        from wsi_pipeline.export.formats import format_class, parse_formats

        names = parse_formats(v)
        for name in names:
            if name == "geoparquet":
                raise ValueError("geoparquet: a slide's nuclei.parquet is always written in it")
            if getattr(format_class(name), "needs_labels", False):
                raise ValueError(f"{name}: needs the label map, which only tile mode "
                                 "(predict-tiles --formats) has")
            if name not in FORMAT_FILES:
                raise ValueError(f"{name}: no slide file is named for it (contract.FORMAT_FILES)")
        return names

    def file_formats(self) -> list[str]:
        """The output formats export writes: `geojson: true` and `formats`, in that order."""
        return list(dict.fromkeys((["geojson"] if self.geojson else []) + self.formats))

    def settings(self) -> dict:
        """The settings as recorded (summary.json) and hashed (the export stage's marker): the
        cell-object keys only when cells are on and `formats` only when it names any, so that
        with them off (the default) both are what they were before the keys existed and
        finished exports stay valid."""
        off = set() if self.geojson_cells else {"geojson_cells", "cell_expansion_um"}
        if not self.formats:  # likewise for runs from before the key
            off.add("formats")
        return self.model_dump(mode="json", exclude=off)
