"""Output formats of the nuclei behind one interface, chosen by name, for slides and images alike.

    fmt = output_format("csv", cfg.export)          # formats.base: the class registered as "csv"
    fmt.write(nuclei, slide_dir / f"nuclei{fmt.suffix}")

`FORMATS` maps a name to the module and class of its writer, imported only when asked for.
A new format (HoVer-Net JSON, an AnnotationStore, OME-Zarr labels) is one module with an
`OutputFormat` subclass (`formats.base`), its line here and its test; `run --formats` and `predict-tiles
--formats` then take its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

# This module imports nothing of the package: the export settings check format names here, and
# the writers (formats.base) import those settings.
__all__ = ["FORMATS", "FormatError", "format_class", "parse_formats"]

class FormatError(ValueError):
    """An unknown format name, or a format that cannot write these nuclei (e.g. a label-map
    format for a whole slide)."""


#: name -> "module:Class" of every output format
FORMATS: dict[str, str] = {
    "geoparquet": "wsi_pipeline.export.formats.geoparquet:GeoParquetFormat",
    "geojson": "wsi_pipeline.export.formats.qupath_geojson:GeoJSONFormat",
    "mat": "wsi_pipeline.export.formats.hovernet_mat:HoVerNetMatFormat",
    "csv": "wsi_pipeline.export.formats.plain_csv:CSVFormat",
}


def parse_formats(names: str | Iterable[str]) -> list[str]:
    """Format names from "geojson,csv" (or a list), checked, duplicates dropped, in order.

    Raises
    ------
    FormatError
        An unknown name; the message lists the known ones.

    Examples
    --------
    >>> parse_formats("geojson, csv,geojson")
    ['geojson', 'csv']
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for raw in items:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise FormatError(f"unknown output format {raw.strip()!r}; known: {', '.join(FORMATS)}")
        if name not in out:
            out.append(name)
    return out


def format_class(name: str) -> type:
    """The `formats.base.OutputFormat` subclass registered as `name` (checked as by
    `parse_formats`), imported now; `formats.base.output_format` makes one with settings."""
    (checked,) = parse_formats([name])
    module, _, cls = FORMATS[checked].partition(":")
    found: type = getattr(importlib.import_module(module), cls)
    return found
