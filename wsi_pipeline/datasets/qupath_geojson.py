"""Reader for a lab's own nucleus types from QuPath: slides + GeoJSON exports of classified
points and detections, as point-labelled crops (`datasets.points`).

Layout: a folder of slides, each with a GeoJSON of the same stem beside it (`S1.svs` +
`S1.geojson`, `.json` or `.geojson.gz`): QuPath's "Export objects as GeoJSON", or this
pipeline's own `nuclei.geojson.gz` reviewed and corrected in QuPath. What becomes a label:

- a point annotation (Point / MultiPoint) with a classification: one labelled nucleus per point;
- a detection or cell (Polygon) with a classification: its centroid (a cell's nucleus outline
  where it has one);
- unclassified objects, and annotations with an area (regions drawn around tissue), are not
  nuclei labels and are skipped (counted in the log).

Coordinates are level-0 pixels of the slide, which is read through the engine's own reader
at `mpp` (the model's pixel size), so the crops are exactly what inference sees. The slide is
cut into `crop_um` squares; each square holding at least one labelled point is a sample
(group = the slide, so a split by group keeps a slide on one side; or the crop itself).
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from wsi_pipeline.datasets.points import check_points
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.validate import OnError, SampleError, check_sample

log = logging.getLogger(__name__)

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".vms")
GEOJSON_SUFFIXES = (".geojson", ".json", ".geojson.gz")
#: side of the square crops cut around the labels (µm): 512 px at 0.25 µm/px
CROP_UM = 128.0


def _features(path: Path) -> list[dict]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable GeoJSON ({exc})") from exc
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise ValueError(f"{path}: expected a FeatureCollection or a list of Features")
    return data


def _class_name(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        cls = cls.get("name")
    return cls if isinstance(cls, str) and cls.strip() else None


def read_labels(path: Path) -> tuple[np.ndarray, list[str]]:
    """(xy (K, 2) level-0 float64, class name per point) of the classified nuclei of one
    GeoJSON export; ValueError naming the file for JSON or geometry it cannot read."""
    xy: list[tuple[float, float]] = []
    names: list[str] = []
    skipped = {"unclassified": 0, "region": 0}
    for i, feature in enumerate(_features(path)):
        props = feature.get("properties") or {}
        name = _class_name(props)
        geometry = props.get("nucleusGeometry") or feature.get("geometry")
        if not isinstance(geometry, dict):
            raise ValueError(f"{path}: feature {i} has no geometry")
        kind = geometry.get("type")
        if name is None:
            skipped["unclassified"] += 1
            continue
        try:
            shape = shapely.geometry.shape(geometry)
        except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as exc:
            raise ValueError(f"{path}: feature {i}: unreadable {kind} geometry ({exc})") from exc
        if kind in ("Point", "MultiPoint"):
            pts = [(p.x, p.y) for p in getattr(shape, "geoms", [shape])]
        elif kind in ("Polygon", "MultiPolygon"):
            if props.get("objectType", "annotation") == "annotation" and "nucleusGeometry" not in props:
                skipped["region"] += 1  # an annotated area, not a nucleus
                continue
            c = shape.centroid
            pts = [(c.x, c.y)]
        else:
            raise ValueError(f"{path}: feature {i}: a {kind} is not a nucleus label "
                             "(points, detections or cells)")
        xy += pts
        names += [name] * len(pts)
    if skipped["unclassified"] or skipped["region"]:
        log.info("%s: skipped %d unclassified object(s) and %d annotated region(s)", path,
                 skipped["unclassified"], skipped["region"])
    if not xy:
        raise ValueError(f"{path}: no classified points, detections or cells")
    arr = np.asarray(xy, np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: non-finite coordinates")
    return arr, names


def slide_pairs(root: Path) -> list[tuple[Path, Path]]:
    """(slide, GeoJSON) pairs of the same stem under `root` (a slide without one is skipped)."""
    root = Path(root)
    pairs = []
    for slide in sorted(p for p in root.iterdir() if p.suffix.lower() in SLIDE_SUFFIXES):
        found = [root / (slide.stem + s) for s in GEOJSON_SUFFIXES if (root / (slide.stem + s)).is_file()]
        if found:
            pairs.append((slide, found[0]))
    if not pairs:
        raise FileNotFoundError(f"no slide with a GeoJSON of the same stem under {root} (slides: "
                                f"{', '.join(SLIDE_SUFFIXES)}; labels: {', '.join(GEOJSON_SUFFIXES)})")
    return pairs


def _slide_crops(slide_path: Path, geojson: Path, mpp: float, crop_um: float,
                 slide_mpp: float | None, reader: str, group_by: str) -> list[Sample]:
    from wsi_pipeline.io import open_slide  # the engine's reader (OpenSlide): only when used

    xy, names = read_labels(geojson)
    class_names = ("background", *sorted(set(names)))
    cls = np.array([class_names.index(n) for n in names], np.float64)
    crop = max(32, int(round(crop_um / mpp)))
    with open_slide(slide_path, mpp=slide_mpp, reader=reader) as slide:  # type: ignore[arg-type]
        s = mpp / slide.mpp  # level-0 px per model px
        width, height = slide.size_at_mpp(mpp)
        rc = np.column_stack([(xy[:, 1] + 0.5) / s - 0.5, (xy[:, 0] + 0.5) / s - 0.5, cls])
        check_points(rc, (height, width), len(class_names), geojson)
        cells = np.floor(rc[:, :2] / crop).astype(np.int64)
        samples = []
        for r, c in sorted({(int(a), int(b)) for a, b in cells}):
            inside = (cells[:, 0] == r) & (cells[:, 1] == c)
            h, w = min(crop, height - r * crop), min(crop, width - c * crop)
            image = slide.read_region_at_mpp(c * crop * s, r * crop * s, (w, h), mpp)
            pts = rc[inside].copy()
            pts[:, 0] -= r * crop
            pts[:, 1] -= c * crop
            samples.append(Sample(
                name=f"{slide_path.stem}_r{r}_c{c}",
                image=np.ascontiguousarray(image),
                inst_map=np.zeros((h, w), np.int32),
                type_map=None,
                class_names=class_names,
                mpp=mpp,
                group=slide_path.stem if group_by == "slide" else f"{slide_path.stem}_r{r}_c{c}",
                meta={"source": str(geojson), "slide": str(slide_path),
                      "level0_xy": (c * crop * s, r * crop * s), "slide_mpp": slide.mpp},
                points=check_points(pts, (h, w), len(class_names), geojson),
            ))
    return samples


def read_qupath_geojson(
    root: Path,
    *,
    mpp: float = 0.25,
    crop_um: float = CROP_UM,
    slide_mpp: float | None = None,
    reader: str = "auto",
    group_by: str = "slide",
    on_error: OnError = "fail",
) -> list[Sample]:
    """Point-labelled crops at `mpp` of every slide + GeoJSON pair under `root`, with one class
    list over all slides (background, then the class names found, sorted) — a class map
    (`DatasetSpec.class_map`) then names them onto the model's classes. `slide_mpp`: the pixel
    size of slides whose files do not state it. `group_by` "slide" (a split keeps each slide on
    one side) or "crop" (one slide split into training and validation squares). A pair that
    cannot be read fails the call (`on_error` "fail") or is skipped with a warning, its files
    named either way."""
    if group_by not in ("slide", "crop"):
        raise ValueError(f"group_by must be 'slide' or 'crop', got {group_by!r}")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    samples: list[Sample] = []
    for slide_path, geojson in slide_pairs(root):
        try:
            crops = _slide_crops(slide_path, geojson, mpp, crop_um, slide_mpp, reader, group_by)
            for crop in crops:
                check_sample(crop)
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            msg = f"{slide_path.name} + {geojson.name}: {exc}"
            if on_error == "fail":
                raise SampleError(msg) from exc
            log.warning("skipping %s", msg)
            continue
        samples += crops
    union = ("background", *sorted({n for s in samples for n in s.class_names[1:]}))
    for s in samples:
        assert s.points is not None
        lut = np.array([union.index(n) for n in s.class_names], np.float64)
        s.points[:, 2] = lut[s.points[:, 2].astype(np.int64)]
        s.class_names = union
    return samples
