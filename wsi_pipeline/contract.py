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
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

# -- files and folders in OUT/<slide>/ ---------------------------------------------------------
MAPS = "maps.zarr"  #: the network's maps (inference → post-processing)
MAPS_PARTIAL = MAPS + ".partial"  #: maps.zarr while inference writes it; renamed when whole
TISSUE_PNG = "tissue.png"  #: the tissue mask of the thumbnail
TISSUE_JSON = "tissue.json"  #: tissue area (mm²), thumbnail pixel size, hole rule
NUCLEI = "nuclei.parquet"  #: the nucleus table (GeoParquet; post-processing → export)
SUMMARY = "summary.json"  #: per-slide summary and QC flags (export)
OVERLAY = "overlay.png"  #: low-resolution overlay of the nuclei (export)
GEOJSON = "nuclei.geojson.gz"  #: optional GeoJSON of the nuclei (export --geojson, --formats geojson)
CSV = "nuclei.csv"  #: optional CSV of the nuclei (export --formats csv)
#: The file of each output format export can write beside nuclei.parquet (`export.formats`;
#: each is nuclei + that format's suffix).
FORMAT_FILES: dict[str, str] = {"geojson": GEOJSON, "csv": CSV}
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

# -- maps.zarr: group attributes (written by inference, read by every later stage) ---------------
class MapsAttrsError(ValueError):
    """maps.zarr's attributes (or the copy in nuclei.parquet's metadata) lack a key a stage needs
    or hold a value of the wrong kind."""


@dataclass(frozen=True, kw_only=True)
class MapsAttrs:
    """maps.zarr's group attributes: what inference tells the later stages about the maps.

    The field names are the stored keys and their order the order they are written, so the
    stored JSON stays what it was and maps.zarr on users' disks keeps reading. The fields without
    a default are what every version of inference wrote and a reader cannot do without; the others
    default to what the readers assumed for maps written before the key existed (and for test maps).
    """

    mpp: float  #: the maps' (model's) pixel size, µm
    slide_mpp: float  #: level-0 pixel size, µm
    slide_mpp_source: str | None = None  #: metadata, objective_power, fallback, override, csv
    scale: float  #: level-0 pixels per map pixel
    origin: tuple[float, float] = (0.0, 0.0)  #: level-0 (x, y) of map pixel (0, 0)'s centre
    level0_size: tuple[int, int]  #: slide (width, height), level-0 pixels
    map_size: tuple[int, int] | None = None  #: maps (width, height)
    class_names: tuple[str, ...]
    class_colors: tuple[str, ...]
    model_sha256: str | None = None
    #: what ran the network: backend, its version, device, precision (model.runtime.Runtime.record)
    backend: dict[str, Any] | None = None
    model_config: dict[str, Any] | None = None
    config: dict[str, Any] | None = None  #: the InferConfig
    wsi_pipeline_version: str | None = None
    slide: dict[str, Any] | None = None  #: {path, size, mtime} of the input
    tissue_mm2: float | None = None
    tile_grid: dict[str, Any] | None = None  #: {tile, stride, margin}
    stain: dict[str, Any] | None = None  #: the slide's stain estimate; None: trained without

    def to_attrs(self) -> dict[str, Any]:
        """The attributes as stored: every key, tuples as JSON lists."""
        return {name: _stored(getattr(self, name)) for name in MAPS_ATTRIBUTES}

    def table_metadata(self) -> dict[str, Any]:
        """What post-processing copies into nuclei.parquet's `wsi_pipeline` metadata, under the
        keys there (TABLE_KEYS), so that export runs after maps.zarr is deleted."""
        return {key: _stored(getattr(self, name)) for name, key in TABLE_KEYS.items()}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], path: str | Path) -> MapsAttrs:
        """The attributes read back from `attrs` (maps.zarr's, or their copy in a table's
        metadata), checked: a missing or malformed key is one MapsAttrsError naming `path`
        and the key, not a KeyError or a wrong number further on. Unknown keys are ignored."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if attrs.get(f.name) is None:
                if f.name in MAPS_REQUIRED:
                    raise MapsAttrsError(f"{path}: maps attribute {f.name!r} is missing")
                continue  # absent or null: the default
            values[f.name] = _checked(f.name, _KINDS[f.name], attrs[f.name], path)
        return cls(**values)


#: The stored attribute names, in the order they are written.
MAPS_ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in fields(MapsAttrs))
#: Those a reader cannot do without (every version of inference wrote them).
MAPS_REQUIRED: tuple[str, ...] = tuple(f.name for f in fields(MapsAttrs) if f.default is MISSING)

#: The maps attributes post-processing copies into nuclei.parquet's `wsi_pipeline` metadata,
#: each with its key there (in the order written; two are renamed, as the table has its own).
TABLE_KEYS: dict[str, str] = {
    "wsi_pipeline_version": "maps_wsi_pipeline_version",
    "model_sha256": "model_sha256",
    "slide": "slide",
    "mpp": "mpp",
    "slide_mpp": "slide_mpp",
    "slide_mpp_source": "slide_mpp_source",
    "stain": "stain",
    "scale": "scale",
    "level0_size": "level0_size",
    "class_names": "class_names",
    "class_colors": "class_colors",
    "tissue_mm2": "tissue_mm2",
    "config": "infer_config",
}

#: The kind of value each attribute holds, as `from_attrs` checks it.
_KINDS: dict[str, str] = {
    "mpp": "number", "slide_mpp": "number", "scale": "number", "tissue_mm2": "number",
    "slide_mpp_source": "string", "model_sha256": "string", "wsi_pipeline_version": "string",
    "origin": "list of numbers", "level0_size": "list of numbers", "map_size": "list of numbers",
    "class_names": "list of strings", "class_colors": "list of strings",
    "backend": "mapping", "model_config": "mapping", "config": "mapping", "slide": "mapping",
    "tile_grid": "mapping", "stain": "mapping",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(name: str, kind: str, value: Any, path: str | Path) -> Any:
    """`value` if it is of `kind` (lists as tuples); numbers are not converted, so that what a
    reader copies on (nuclei.parquet's metadata) is what was stored."""
    ok = {
        "number": lambda: _is_number(value),
        "string": lambda: isinstance(value, str),
        "mapping": lambda: isinstance(value, dict),
        "list of numbers": lambda: isinstance(value, list | tuple) and all(map(_is_number, value)),
        "list of strings": lambda: (isinstance(value, list | tuple)
                                    and all(isinstance(v, str) for v in value)),
    }[kind]()
    if not ok:
        raise MapsAttrsError(f"{path}: maps attribute {name!r} is {value!r}, not a {kind}")
    return tuple(value) if kind.startswith("list") else value


def _stored(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
