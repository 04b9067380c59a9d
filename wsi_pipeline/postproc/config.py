"""Parameters of the two-step watershed (every size is physical: µm, µm², converted with mpp) and
of cutting the slide maps into chunks (`postproc.chunks`, `postproc.slide`)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

Vector3 = tuple[float, float, float]


class OpticalDensityConfig(BaseModel):
    """Per-nucleus haematoxylin and eosin optical densities (nuclei.parquet's hematoxylin_od_*
    and eosin_od_* columns; QuPath's "Nucleus: Hematoxylin OD mean" ...): colour deconvolution
    (`wsi_pipeline.deconvolution`, QuPath's conventions, log10 OD) of the slide's own pixels,
    read at the maps' pixel size on the maps' grid. Defaults: QuPath's "H&E default"."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Measure them (reads the slide's pixels in every chunk; the slide file "
        "must still be where inference read it)."
    )
    hematoxylin: Vector3 = Field(
        (0.65111, 0.70119, 0.29049), description="Haematoxylin stain vector (R, G, B OD; normalised)."
    )
    eosin: Vector3 = Field(
        (0.2159, 0.8012, 0.5581), description="Eosin stain vector (R, G, B OD; normalised)."
    )
    residual: Vector3 | None = Field(
        None, description="Third stain vector; None = the normalised cross product of the two (QuPath)."
    )
    background: Vector3 = Field(
        (255.0, 255.0, 255.0), description="White (glass) intensity per channel: OD = -log10(v / background)."
    )

    @model_validator(mode="after")
    def _usable(self) -> OpticalDensityConfig:
        for name in ("hematoxylin", "eosin", "residual"):
            v = getattr(self, name)
            if v is not None and (min(v) < 0 or max(v) <= 0):
                raise ValueError(f"{name}: a stain vector has OD components >= 0, not all 0")
        h, e = self.hematoxylin, self.eosin
        cross = (h[1] * e[2] - h[2] * e[1], h[2] * e[0] - h[0] * e[2], h[0] * e[1] - h[1] * e[0])
        norm = math.sqrt(sum(c * c for c in cross))
        if norm < 1e-6 * math.hypot(*h) * math.hypot(*e):
            raise ValueError("hematoxylin and eosin vectors are parallel: no deconvolution")
        r = self.residual
        if r is not None and (abs(sum(c * x for c, x in zip(cross, r, strict=True)))
                              < 1e-6 * norm * math.hypot(*r)):
            raise ValueError("residual lies in the plane of hematoxylin and eosin: no deconvolution")
        if not all(0 < b <= 255 for b in self.background):
            raise ValueError("background: three intensities in (0, 255]")
        return self


class PostprocConfig(BaseModel):
    """Post-processing parameters. The step-1 defaults (ns_threshold, edge_threshold,
    min_marker_area_um2) were tuned on the shipped network's output on CoNSeP *training* patches
    (``benchmarks/postproc_on_model.py --side train --tune``): a trained network's HV maps are
    softer than ideal ones, so borders need a lower edge cut and fragments a larger minimum to
    stay out of the marker set. They still reach PQ > 0.95 on oracle maps
    (``benchmarks/postproc_oracle.py``); sizes are physical and hold at 0.25 and 0.5 µm/px.
    min_object_area_um2 (1.0 -> 1.5) and merge_centre_tolerance (0.5 -> 0.3) were tuned later
    the same way on training images of every set of the mix (``benchmarks/postproc_tune_mix.py
    --set``): fewer fragments kept and fewer merges of touching small nuclei (MODEL_CARD.md,
    "Post-processing defaults")."""

    model_config = ConfigDict(extra="forbid")

    # --- step 1: foreground and HV edges
    ns_threshold: float = Field(
        0.4, gt=0, lt=1, description="Nucleus probability cut for the foreground."
    )
    min_object_area_um2: float = Field(
        1.5, ge=0, description="Foreground blobs and final instances smaller than this are dropped."
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
        0.3,
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
    optical_density: OpticalDensityConfig = Field(
        default_factory=OpticalDensityConfig,
        description="Per-nucleus haematoxylin/eosin optical densities from the slide's pixels.",
    )

    def settings(self) -> dict:
        """The settings as recorded (nuclei.parquet's provenance, summary.json) and hashed (the
        postproc stage's marker): the optical-density block only when it is on, so that with it
        off (the default) both are what they were before it existed and finished post-processing
        stays valid."""
        off = set() if self.optical_density.enabled else {"optical_density"}
        return self.model_dump(mode="json", exclude=off)

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
    workers: int | None = Field(
        None, ge=1,
        description="Worker processes when no Dask cluster is given (a single slide run in this "
        "process); None = one per core this process may use, at most 8 (each holds one chunk "
        "window with its halo and label images at a time); 1 = chunk after chunk in this process.",
    )
    row_group_rows: int = Field(65536, ge=1024, description="Parquet row-group size (rows).")
    simplify_px: float = Field(
        0.5, ge=0, description="Polygon simplification tolerance in map pixels (0 = exact outline)."
    )

    def local_workers(self) -> int:
        """`workers`, or the default: one per core this process may use, at most 8."""
        if self.workers is not None:
            return self.workers
        from wsi_pipeline.postproc.pool import usable_cpus

        return max(1, min(8, usable_cpus()))
