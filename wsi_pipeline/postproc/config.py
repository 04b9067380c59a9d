"""Parameters of the two-step watershed (every size is physical: µm, µm², converted with mpp) and
of cutting the slide maps into chunks (`postproc.chunks`, `postproc.slide`)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class PostprocConfig(BaseModel):
    """Post-processing parameters. The step-1 defaults (ns_threshold, edge_threshold,
    min_marker_area_um2) were tuned on the shipped network's output on CoNSeP *training* patches
    (``benchmarks/postproc_on_model.py --side train --tune``): a trained network's HV maps are
    softer than ideal ones, so borders need a lower edge cut and fragments a larger minimum to
    stay out of the marker set. They still reach PQ > 0.95 on oracle maps
    (``benchmarks/postproc_oracle.py``); sizes are physical and hold at 0.25 and 0.5 µm/px."""

    model_config = ConfigDict(extra="forbid")

    # --- step 1: foreground and HV edges
    ns_threshold: float = Field(
        0.4, gt=0, lt=1, description="Nucleus probability cut for the foreground."
    )
    min_object_area_um2: float = Field(
        1.0, ge=0, description="Foreground blobs and final instances smaller than this are dropped."
    )
    hv_smooth_sigma_um: float = Field(
        0.0,
        ge=0,
        description="Gaussian smoothing of the HV maps (inside the foreground) before the Sobel step.",
    )
    edge_threshold: float = Field(
        0.02,
        gt=0,
        description=(
            "A pixel is an edge where the fall of H along x plus the fall of V along y exceeds this"
            " per pixel (inside a nucleus both maps rise; a border between nuclei falls by up to 2)."
        ),
    )
    min_marker_area_um2: float = Field(
        3.0,
        ge=0,
        description="Marker fragments smaller than this are discarded (their pixels are flooded).",
    )

    # --- step 2: evidence-based merge, then distance-transform watershed of merged objects
    merge_centre_tolerance: float = Field(
        0.5,
        ge=0,
        description=(
            "Two adjacent pieces are one nucleus only if the centres their HV maps point to lie"
            " closer than this fraction of the merged object's equivalent radius."
        ),
    )
    merge_min_contact: float = Field(
        0.3,
        ge=0,
        description="Shared border must be at least this fraction of the smaller piece's "
        "equivalent diameter.",
    )
    merge_min_border_ns: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Mean nucleus probability along the shared border must reach this.",
    )
    split_peak_height_um: float = Field(
        1.0,
        gt=0,
        description=(
            "Distance-transform maxima of a merged object must stand this high above the saddle"
            " between them to seed separate nuclei in the second watershed."
        ),
    )

    def px(self, microns: float, mpp: float) -> float:
        """Length in µm → pixels."""
        return microns / mpp

    def px2(self, square_microns: float, mpp: float) -> int:
        """Area in µm² → whole pixels (at least 0)."""
        return math.floor(square_microns / (mpp * mpp))


class ChunkingConfig(BaseModel):
    """How the slide maps are cut into work units and how the nucleus table is written."""

    model_config = ConfigDict(extra="forbid")

    halo_um: float = Field(
        32.0,
        gt=0,
        description="Context around each chunk. Must exceed the largest nucleus (plus a neighbour "
        "it may merge with in watershed step 2) so owned nuclei are segmented as on the full map.",
    )
    workers: int = Field(2, ge=1, description="Threads when no Dask client is given.")
    row_group_rows: int = Field(65536, ge=1024, description="Parquet row-group size (rows).")
    simplify_px: float = Field(
        0.5, ge=0, description="Polygon simplification tolerance in map pixels (0 = exact outline)."
    )
