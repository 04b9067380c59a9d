"""Nucleus table → gzipped GeoJSON that QuPath imports as detection objects.

QuPath (≥ 0.4) reads a FeatureCollection whose features carry `properties.objectType`
("detection"), a `classification` {name, color [r, g, b]} and a `measurements` mapping.
Coordinates stay in level-0 pixels, which is QuPath's image space. Written batch by batch
so that memory does not grow with the number of nuclei.

The nucleus id is never a measurement: QuPath keeps measurements as float32, exact only up to
2**24 ≈ 16.8 M, and slide nucleus ids reach ~4e8. It is the object's `name` (a string, kept
exactly) and, hashed with the slide id, the Feature's `id`, which QuPath takes as the object's
UUID ("Object ID" in its measurement exports): `nucleus_uuid(slide_id, nucleus_id)` =
uuid5(NUCLEUS_NAMESPACE, f"{slide_id}/{nucleus_id}"), the same on every run.

With `cell_expansion_px` the features are QuPath *cell* objects instead (objectType "cell"):
the geometry is the nucleus expanded by that distance, as QuPath's cell detection makes
("Cell expansion"), and the nucleus is the `nucleusGeometry` property. Where expansions of
neighbouring nuclei meet, the ring is split between them (Voronoi cells of the nucleus
centroids), and no cell covers another nucleus, so cells never overlap. This holds every
outline of the slide in memory (about 0.5 kB a nucleus) to find each nucleus's neighbours.

Coordinates are rounded to 10**-decimals px (0.01 by default, the grid QuPath ≥ 0.6 reduces
imported geometries to); an outline that rounding would make invalid is rounded by a
validity-preserving method instead, so every written polygon is valid and closed.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.contract import OD_COLUMNS, OD_QUPATH_NAMES, PROB_PREFIX

MEASUREMENT_COLUMNS = ("area_um2", "perimeter_um", "eccentricity", "solidity", "type_prob")
#: uuid5(NAMESPACE_URL, "wsi-pipeline:nucleus"): the namespace of every nucleus UUID.
NUCLEUS_NAMESPACE = uuid.UUID("4166ec03-79a2-504e-9b2a-eb3a9ff4691d")
#: The coarsest grid an importer is known to round to (QuPath 0.6: 0.01 px).
QUPATH_GRID = 0.01


def nucleus_uuid(slide_id: str, nucleus_id: int) -> uuid.UUID:
    """The Feature `id` (QuPath's object ID) of a nucleus: deterministic, unique per slide."""
    return uuid.uuid5(NUCLEUS_NAMESPACE, f"{slide_id}/{int(nucleus_id)}")


def hex_to_rgb(color: str) -> list[int]:
    """'#rrggbb' → [r, g, b]."""
    h = color.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"not a #rrggbb colour: {color!r}")
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)]


def _largest_polygon(geom: shapely.Geometry) -> shapely.Geometry:
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, shapely.Polygon) and not g.is_empty]
    return max(parts, key=lambda g: g.area) if parts else geom


def rounded_outlines(wkb: np.ndarray, decimals: int) -> np.ndarray:
    """Polygons on the 10**-decimals grid, valid there and on QuPath's 0.01 px grid.

    Plain (pointwise) rounding keeps every vertex where it was, to the grid; the rare outline it
    makes invalid (a spike or a narrow neck collapsing) is rounded by GEOS's validity-preserving
    precision reduction instead and, should that split it, keeps its largest part.
    """
    orig = shapely.from_wkb(wkb)
    grid = 10.0**-decimals
    geoms = shapely.set_precision(orig, grid, mode="pointwise")
    ok = shapely.is_valid(geoms) & (shapely.get_type_id(geoms) == 3) & ~shapely.is_empty(geoms)
    if grid < QUPATH_GRID:
        ok &= shapely.is_valid(shapely.set_precision(geoms, QUPATH_GRID, mode="pointwise"))
    for i in np.flatnonzero(~ok & ~shapely.is_empty(orig)):
        fixed = _largest_polygon(shapely.set_precision(orig[i], max(grid, QUPATH_GRID)))
        if isinstance(fixed, shapely.Polygon) and fixed.is_valid and not fixed.is_empty:
            geoms[i] = fixed
    return geoms


class CellMaker:
    """Cells (nucleus + cytoplasm ring of `expansion_px`) for the nuclei of one slide, given all
    its outlines (WKB, in table order): `cells(start, n)` gives the cells of rows start..start+n.

    A cell is its nucleus expanded by `expansion_px`, cut to the Voronoi cell of the nucleus
    centroid among the neighbours within reach, minus every other nucleus, plus its own
    nucleus: Voronoi cells do not overlap and a nucleus belongs to its own cell only, so no two
    cells overlap. A cell the cuts split keeps the part that holds its nucleus.
    """

    def __init__(self, wkb: np.ndarray, expansion_px: float):
        if not expansion_px > 0:
            raise ValueError(f"cell expansion must be > 0 px, got {expansion_px!r}")
        self.d = float(expansion_px)
        self.nuclei = shapely.from_wkb(wkb)
        self.centroids = shapely.centroid(self.nuclei)
        self.tree = shapely.STRtree(self.nuclei)

    def cells(self, start: int, n: int) -> np.ndarray:
        idx = np.arange(start, start + n)
        if n == 0:
            return np.empty(0, dtype=object)
        own = self.nuclei[idx]
        grown = shapely.buffer(own, self.d, quad_segs=4)
        # Neighbours whose centroid may decide a point of these rings: within 2 d of the rings.
        reach = shapely.buffer(shapely.envelope(shapely.union_all(grown)), 2 * self.d)
        near = np.union1d(self.tree.query(reach, predicate="intersects"), idx)
        points = self.centroids[near]
        regions = shapely.get_parts(shapely.voronoi_polygons(
            shapely.multipoints(points), extend_to=shapely.buffer(reach, self.d), ordered=True))
        pos = {int(k): i for i, k in enumerate(near)}
        out = np.empty(n, dtype=object)
        for k, i in enumerate(idx):
            cell = grown[k]
            if len(regions) == len(near):  # coincident centroids merge cells: skip the cut
                cell = shapely.intersection(cell, regions[pos[int(i)]])
            others = self.tree.query(grown[k], predicate="intersects")
            others = others[others != i]
            if len(others):
                cell = shapely.difference(cell, shapely.union_all(self.nuclei[others]))
            cell = shapely.union(cell, own[k])
            out[k] = _part_holding(cell, own[k])
        return out


def _part_holding(geom: shapely.Geometry, nucleus: shapely.Geometry) -> shapely.Geometry:
    parts = [g for g in shapely.get_parts(geom) if isinstance(g, shapely.Polygon) and not g.is_empty]
    if not parts:
        return nucleus
    return max(parts, key=lambda g: shapely.intersection(g, nucleus).area)


def _features(batch: pa.RecordBatch, classifications: dict[int, str], decimals: int,
              slide_id: str, cells: np.ndarray | None = None) -> Iterator[str]:
    """One serialised Feature per row of a nucleus batch (geometry as WKB, nucleus_id, type_id,
    and whichever measurement and prob_* columns it has); with `cells` (one polygon a row) cell
    objects whose nucleusGeometry is the row's outline."""
    geoms = rounded_outlines(batch.column("geometry").to_numpy(False), decimals)
    geo_json = shapely.to_geojson(geoms)
    if cells is not None:
        cell_json = shapely.to_geojson(rounded_outlines(shapely.to_wkb(cells), decimals))
    prob_cols = [c for c in batch.schema.names if c.startswith(PROB_PREFIX)]
    meas_cols = [c for c in (*MEASUREMENT_COLUMNS, *prob_cols, *OD_COLUMNS) if c in batch.schema.names]
    values = {c: np.round(batch.column(c).to_numpy(False).astype(np.float64), 4) for c in meas_cols}
    ids = batch.column("nucleus_id").to_numpy(False)
    type_ids = batch.column("type_id").to_numpy(False)
    for i in range(batch.num_rows):
        nid = int(ids[i])
        # QuPath's measurements are numbers: a missing (NaN) value is left out, as QuPath would.
        measurements = {OD_QUPATH_NAMES.get(c, c): v for c in meas_cols
                        if math.isfinite(v := float(values[c][i]))}
        if cells is None:
            geometry, kind, nucleus = geo_json[i], "detection", ""
        else:
            geometry, kind, nucleus = cell_json[i], "cell", ',"nucleusGeometry":' + geo_json[i]
        yield (
            '{"type":"Feature","id":"' + str(nucleus_uuid(slide_id, nid))
            + '","geometry":' + geometry
            + ',"properties":{"objectType":"' + kind + '","name":"' + str(nid)
            + '","classification":' + classifications[int(type_ids[i])]
            + nucleus
            + ',"measurements":' + json.dumps(measurements) + "}}"
        )


def write_feature_collection(
    out_path: Path,
    batches: Iterable[pa.RecordBatch],
    class_names: Sequence[str],
    class_colors: Sequence[str],
    *,
    slide_id: str,
    decimals: int = 2,
    cell_maker: CellMaker | None = None,
) -> int:
    """Stream nucleus batches into `out_path` (.geojson.gz) atomically; returns the feature count.

    Each batch needs `geometry` (WKB polygons), `nucleus_id` and `type_id`; measurement columns
    (MEASUREMENT_COLUMNS, prob_*; the OD_COLUMNS under QuPath's names, "Nucleus: Hematoxylin OD
    mean" ...) are copied where present. Coordinates are written as given,
    rounded to `decimals`. `slide_id` (with the nucleus id) makes each Feature's UUID. With
    `cell_maker` (made from the same rows in the same order) the features are cell objects.
    """
    classifications = {
        k: json.dumps({"name": name, "color": hex_to_rgb(color)})
        for k, (name, color) in enumerate(zip(class_names, class_colors, strict=True))
    }
    n = 0
    with atomic_path(out_path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
        f.write('{"type":"FeatureCollection","features":[')
        for batch in batches:
            cells = None if cell_maker is None else cell_maker.cells(n, batch.num_rows)
            for feature in _features(batch, classifications, decimals, slide_id, cells):
                f.write(("," if n else "") + "\n" + feature)
                n += 1
        f.write("\n]}\n")
    return n


def qupath_problems(path: Path, max_problems: int = 20) -> list[str]:
    """What in a .geojson(.gz) file QuPath would refuse or import wrongly ([] = nothing).

    The rules of QuPath's GeoJSON import (0.4-0.6) for detections: a FeatureCollection of
    Features with objectType "detection" (or "cell", with a valid `nucleusGeometry`), a
    classification with a name and an [r, g, b] colour, measurements as a map of names to
    numbers, a UUID `id` (unique), and closed, valid polygon rings that stay valid when rounded
    to QuPath's 0.01 px grid.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        doc = json.load(f, parse_constant=lambda c: float("nan"))
    problems: list[str] = []

    def bad(i: int | None, what: str) -> None:
        problems.append(f"feature {i}: {what}" if i is not None else what)

    if doc.get("type") != "FeatureCollection" or not isinstance(doc.get("features"), list):
        return ["not a FeatureCollection with a list of features"]
    seen: set[Any] = set()  # feature ids as found (any JSON value; checked above)
    for i, feat in enumerate(doc["features"]):
        if len(problems) >= max_problems:
            break
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            bad(i, "not a Feature")
            continue
        fid = feat.get("id")
        try:
            uuid.UUID(str(fid))
        except ValueError:
            bad(i, f"id {fid!r} is not a UUID")
        if fid in seen:
            bad(i, f"id {fid} repeated")
        seen.add(fid)
        props = feat.get("properties") or {}
        if props.get("objectType") not in ("detection", "cell"):
            bad(i, f"objectType {props.get('objectType')!r}, not 'detection' or 'cell'")
        if props.get("objectType") == "cell":
            nucleus = props.get("nucleusGeometry")
            if nucleus is None:
                bad(i, "cell without nucleusGeometry")
            else:
                problems.extend(f"feature {i}: nucleusGeometry: {p}"
                                for p in _geometry_problems(nucleus))
        if not isinstance(props.get("name", ""), str):
            bad(i, "name is not a string")
        cls = props.get("classification")
        color = cls.get("color") if isinstance(cls, dict) else None
        if not (isinstance(cls, dict) and isinstance(cls.get("name"), str) and cls["name"]):
            bad(i, "classification without a name")
        if not (isinstance(color, list) and len(color) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            bad(i, f"classification colour {color!r} is not [r, g, b] in 0-255")
        meas = props.get("measurements", {})
        if not isinstance(meas, dict):
            bad(i, "measurements is not a map")
        else:
            for k, v in meas.items():
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    bad(i, f"measurement {k!r} = {v!r} is not a finite number")
        problems.extend(f"feature {i}: {p}" for p in _geometry_problems(feat.get("geometry")))
    return problems[:max_problems]


def _geometry_problems(geometry: object) -> list[str]:
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        kind = geometry.get("type") if isinstance(geometry, dict) else geometry
        return [f"geometry {kind!r} is not a Polygon"]
    polys = geometry.get("coordinates")
    polys = [polys] if geometry["type"] == "Polygon" else polys
    out = []
    for rings in polys or [[]]:
        if not rings:
            out.append("polygon without rings")
        for ring in rings:
            if len(ring) < 4 or ring[0] != ring[-1]:
                out.append("ring not closed or with fewer than 4 positions")
            if not all(len(p) == 2 and all(isinstance(c, int | float) and math.isfinite(c) for c in p)
                       for p in ring):
                out.append("ring with a position that is not two finite numbers")
    if out:
        return out
    geom = shapely.from_geojson(json.dumps(geometry))
    if not geom.is_valid:
        return [f"invalid polygon: {shapely.is_valid_reason(geom)}"]
    on_grid = shapely.set_precision(geom, QUPATH_GRID, mode="pointwise")
    if not on_grid.is_valid:
        return [f"invalid once rounded to {QUPATH_GRID} px: {shapely.is_valid_reason(on_grid)}"]
    return []
