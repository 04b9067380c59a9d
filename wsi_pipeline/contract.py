"""The stage contract: the names and shapes that the stages of one slide hand each other.

Inference writes ``maps.zarr`` (and ``tissue.png``/``tissue.json``), post-processing reads the maps
and writes ``nuclei.parquet``, export reads the table and writes the summary, overlay, QC sheet
and GeoJSON; the cohort layer removes a stage's outputs before redoing it and checks that a
finished stage left them. Every one of those names is defined here, once, and every stage
imports it, so what a stage deletes before a redo cannot drift from what it writes
(`wsi_pipeline.cohort.stages.STAGE_OUTPUTS` is built from these constants).

Light on purpose (pyarrow only): the cohort planner imports it without the segmentation stack.
"""

from __future__ import annotations

import re

import pyarrow as pa

# -- files and folders in OUT/<slide>/ ---------------------------------------------------------
MAPS = "maps.zarr"  #: the network's maps (inference → post-processing)
MAPS_PARTIAL = MAPS + ".partial"  #: maps.zarr while inference writes it; renamed when whole
TISSUE_PNG = "tissue.png"  #: the tissue mask of the thumbnail
TISSUE_JSON = "tissue.json"  #: tissue area (mm²), thumbnail pixel size, hole rule
NUCLEI = "nuclei.parquet"  #: the nucleus table (GeoParquet; post-processing → export)
SUMMARY = "summary.json"  #: per-slide summary and QC flags (export)
OVERLAY = "overlay.png"  #: low-resolution overlay of the nuclei (export)
GEOJSON = "nuclei.geojson.gz"  #: optional GeoJSON of the nuclei (export --geojson)
QC_DIR = "qc"  #: the QC sheet folder (export)
STAGES_DIR = "stages"  #: one done-marker per finished stage (cohort)

# -- maps.zarr: arrays ---------------------------------------------------------------------------
ARRAY_NS = "ns"  #: (H, W) float16 nucleus probability
ARRAY_HV = "hv"  #: (2, H, W) float16 horizontal and vertical distance maps
ARRAY_NC = "nc"  #: (C, H, W) uint8 type probabilities (x/255)
ARRAY_INFERRED = "inferred"  #: (H, W) bool, pixels the model predicted (the rest: no tissue)
ARRAY_TISSUE = "tissue"  #: the dilated tissue mask that chose the tiles, at its own pixel size
#: Attribute of the tissue array: its pixel size (µm).
TISSUE_MPP_ATTR = "tissue_mpp"

# -- maps.zarr: group attributes (written by inference.slide._attributes) ----------------------------------
MAPS_ATTRIBUTES: tuple[str, ...] = (
    "mpp",  # the maps' (model's) pixel size, µm
    "slide_mpp",  # level-0 pixel size, µm
    "slide_mpp_source",  # metadata, objective_power, fallback, override, csv
    "scale",  # level-0 pixels per map pixel
    "origin",  # level-0 (x, y) of map pixel (0, 0)
    "level0_size",  # slide (width, height), level-0 pixels
    "map_size",  # maps (width, height)
    "class_names",
    "class_colors",
    "model_sha256",
    "model_config",
    "backend",  # what ran the network: backend, its version, device, precision (predict.backend_record)
    "config",  # the InferConfig
    "wsi_pipeline_version",
    "slide",  # {path, size, mtime} of the input
    "tissue_mm2",
    "tile_grid",  # {tile, stride, margin}
    "stain",  # the slide's stain estimate; None: model trained without stain normalisation
)

# -- nuclei.parquet ----------------------------------------------------------------------------
PROB_PREFIX = "prob_"  #: the columns of per-class mean probabilities start with this

#: GeoParquet 1.1 bbox covering column: each polygon's bounds (level-0 px), float32 rounded
#: outwards so that the box always contains the polygon. Its per-row-group statistics let
#: DuckDB, GDAL or pyarrow skip row groups outside a query window without reading geometry.
BBOX_TYPE = pa.struct([(k, pa.float32()) for k in ("xmin", "ymin", "xmax", "ymax")])

#: Per-nucleus stain optical densities (postproc.optical_density, off by default): mean,
#: sample standard deviation, min and max over the nucleus's map pixels of the haematoxylin and
#: eosin amounts from colour deconvolution (wsi_pipeline.deconvolution; log10 OD, QuPath's
#: conventions). float32 columns between the prob_* columns and geometry, only when enabled.
OD_STAINS = ("hematoxylin", "eosin")
OD_STATS = ("mean", "std", "min", "max")
OD_COLUMNS: tuple[str, ...] = tuple(f"{s}_od_{k}" for s in OD_STAINS for k in OD_STATS)
#: Their names as QuPath's cell detection writes them (GeoJSON measurements).
OD_QUPATH_NAMES: dict[str, str] = {
    f"{s}_od_{k}": f"Nucleus: {s.capitalize()} OD {'std dev' if k == 'std' else k}"
    for s in OD_STAINS for k in OD_STATS
}


def prob_column(class_name: str) -> str:
    """`prob_<class>` column name: lower case, non-alphanumerics folded to `_`."""
    return PROB_PREFIX + re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_")


def nuclei_schema(class_names: tuple[str, ...], optical_density: bool = False) -> pa.Schema:
    """Column layout of nuclei.parquet (names fixed by issue 5; other tools read them); with
    `optical_density` the OD_COLUMNS too."""
    fields = [
        ("nucleus_id", pa.int64()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("x_um", pa.float64()),
        ("y_um", pa.float64()),
        ("area_um2", pa.float32()),
        ("perimeter_um", pa.float32()),
        ("eccentricity", pa.float32()),
        ("solidity", pa.float32()),
        ("type_id", pa.int16()),
        ("type_name", pa.string()),
        ("type_prob", pa.float32()),
    ]
    fields += [(prob_column(name), pa.float32()) for name in class_names]
    if optical_density:
        fields += [(name, pa.float32()) for name in OD_COLUMNS]
    fields.append(("geometry", pa.binary()))
    fields.append(("bbox", BBOX_TYPE))
    return pa.schema(fields)
