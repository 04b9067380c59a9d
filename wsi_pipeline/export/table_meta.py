"""What the export stage knows about a slide, read from its nuclei table rather than its maps.

Post-processing copies maps.zarr's attributes (class names and colours, slide size, pixel sizes,
tissue area, model and provenance) into nuclei.parquet's `wsi_pipeline` metadata. Export reads
them from there, so maps.zarr (about 90 MB per mm² of tissue) may be deleted once a slide is
finished and export still reruns on its own (`--geojson` later, a changed QC bound) without
redoing inference. Tables written before a key was copied fall back to the maps' attributes
where the maps are still there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from wsi_pipeline.contract import MAPS, MAPS_REQUIRED, NUCLEI, TABLE_KEYS, MapsAttrs


class TableMetaError(ValueError):
    """The nuclei table lacks what export needs and the maps it came from are gone."""


def table_provenance(parquet_path: Path) -> dict[str, Any]:
    """nuclei.parquet's `wsi_pipeline` metadata ({} when it has none)."""
    meta = pq.read_schema(parquet_path).metadata or {}
    return json.loads(meta.get(b"wsi_pipeline", b"{}"))


def slide_attributes(slide_dir: Path, prov: dict[str, Any] | None = None) -> MapsAttrs:
    """The slide's maps attributes, from nuclei.parquet's metadata `prov` (read when not given);
    keys the table lacks come from maps.zarr when it exists."""
    slide_dir = Path(slide_dir)
    table = slide_dir / NUCLEI
    prov = table_provenance(table) if prov is None else prov
    attrs = {name: prov[key] for name, key in TABLE_KEYS.items() if key in prov}
    lacking = [name for name in TABLE_KEYS if name not in attrs]
    if lacking:
        maps = _maps_attributes(slide_dir)
        attrs.update({name: maps[name] for name in lacking if name in maps})
    missing = [name for name in MAPS_REQUIRED if attrs.get(name) is None]
    if missing:
        raise TableMetaError(
            f"{table}: its metadata lacks {', '.join(missing)} (a table written by an older "
            f"wsi-pipeline) and {slide_dir / MAPS} is gone: delete {table.name} and rerun "
            "to rebuild it (inference is redone)")
    return MapsAttrs.from_attrs(attrs, table)


def _maps_attributes(slide_dir: Path) -> dict[str, Any]:
    """maps.zarr's attributes; {} when there are no readable maps."""
    maps = slide_dir / MAPS
    if not maps.is_dir():
        return {}
    import zarr

    try:
        return zarr.open_group(str(maps), mode="r").attrs.asdict()
    except Exception:  # noqa: BLE001 - damaged maps: the table's metadata is all there is
        return {}
