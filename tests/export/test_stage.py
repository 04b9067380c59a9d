"""Export stage: summary.json, QuPath GeoJSON and overlay.png from a slide folder."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from PIL import Image

from tests.helpers.maps_synth import (
    CLASSES,
    COLORS,
    MPP,
    disc_instances,
    oracle_maps,
    write_maps_zarr,
)
from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.export.geojson import (
    hex_to_rgb,
    nucleus_uuid,
    qupath_problems,
    write_feature_collection,
)
from wsi_pipeline.export.stage import export_slide
from wsi_pipeline.postproc import PostprocConfig
from wsi_pipeline.postproc.slide import postprocess_slide

CENTRES = [(40, 40), (40, 120), (120, 40), (150, 150), (200, 90), (90, 200)]
TYPES = [1, 2, 3, 3, 4, 4]


def _slide_dir(tmp_path, slide: dict | None = None, empty: bool = False):
    """A slide folder as the infer and postproc stages leave it (oracle maps, 256² map)."""
    d = tmp_path / "slideX"
    d.mkdir()
    inst = disc_instances((256, 256), [] if empty else CENTRES, radius=14)
    types = np.zeros(inst.shape, dtype=np.uint8)
    for k, t in enumerate(TYPES, start=1):
        types[inst == k] = t
    inferred = np.zeros(inst.shape, bool) if empty else np.ones(inst.shape, bool)
    write_maps_zarr(d / "maps.zarr", oracle_maps(inst, types, inferred), 128, slide=slide)
    Image.fromarray(np.where(inferred[::8, ::8], 255, 0).astype(np.uint8)).save(d / "tissue.png")
    (d / "stages").mkdir()
    for stage, sec in (("infer", 12.5), ("postproc", 3.25)):
        (d / "stages" / f"{stage}.json").write_text(json.dumps({"stage": stage, "seconds": sec}))
    postprocess_slide(d / "maps.zarr", d / "nuclei.parquet", PostprocConfig(), progress=False)
    return d


def test_summary_counts_densities_timings_and_provenance(tmp_path):
    d = _slide_dir(tmp_path)
    summary = export_slide(d, ExportConfig())
    on_disk = json.loads((d / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    tissue_mm2 = 256 * 256 * MPP**2 / 1e6
    assert summary["tissue_mm2"] == pytest.approx(tissue_mm2)
    assert summary["n_nuclei"] == len(CENTRES)
    counts = {name: summary["per_type"][name]["count"] for name in CLASSES[1:]}
    assert counts == {"other": 1, "inflammatory": 1, "epithelial": 2, "spindle": 2}
    assert summary["per_type"]["spindle"]["per_mm2"] == pytest.approx(2 / tissue_mm2)
    assert summary["timings_s"]["infer"] == 12.5 and summary["timings_s"]["postproc"] == 3.25
    assert summary["timings_s"]["export"] > 0
    prov = summary["provenance"]
    assert prov["model_sha256"] == "0" * 64 and prov["wsi_pipeline_version"]
    assert set(prov["config"]) == {"infer", "postproc", "chunking", "export"}
    assert {"path", "size", "mtime"} <= set(prov["input"])
    assert not (d / "nuclei.geojson.gz").exists()  # GeoJSON is opt-in
    leftovers = [p for p in os.listdir(d) if p.startswith(".")]
    assert leftovers == []


def test_geojson_is_a_qupath_detection_collection(tmp_path):
    d = _slide_dir(tmp_path)
    export_slide(d, ExportConfig(geojson=True))
    with gzip.open(d / "nuclei.geojson.gz", "rt", encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(CENTRES)
    names = set()
    for feat in doc["features"]:
        assert feat["type"] == "Feature" and feat["geometry"]["type"] == "Polygon"
        props = feat["properties"]
        assert props["objectType"] == "detection"
        cls = props["classification"]
        names.add(cls["name"])
        assert cls["color"] == hex_to_rgb(COLORS[CLASSES.index(cls["name"])])
        assert {"area_um2", "perimeter_um", "solidity", "type_prob", "prob_epithelial"} <= set(
            props["measurements"]
        )
        ring = np.array(feat["geometry"]["coordinates"][0])
        assert (ring[0] == ring[-1]).all() and ring.max() <= 128  # level-0 px (scale 0.5)
    assert names == {"other", "inflammatory", "epithelial", "spindle"}
    assert qupath_problems(d / "nuclei.geojson.gz") == []


def test_geojson_ids_join_back_to_the_nuclei_table(tmp_path):
    """The nucleus id is the object name and, with the slide id, its UUID, never a (float32)
    measurement; both join a QuPath export back to nuclei.parquet."""
    d = _slide_dir(tmp_path)
    export_slide(d, ExportConfig(geojson=True))
    with gzip.open(d / "nuclei.geojson.gz", "rt", encoding="utf-8") as f:
        features = json.load(f)["features"]
    table = pq.read_table(d / "nuclei.parquet", columns=["nucleus_id", "area_um2"]).to_pandas()
    by_name = {int(f["properties"]["name"]): f for f in features}
    assert sorted(by_name) == sorted(table["nucleus_id"])
    for nid, feat in by_name.items():
        assert feat["id"] == str(nucleus_uuid("slideX", nid))
        assert "nucleus_id" not in feat["properties"]["measurements"]
    assert len({f["id"] for f in features}) == len(features)
    assert str(nucleus_uuid("slideX", 7)) == str(nucleus_uuid("slideX", 7)) != str(nucleus_uuid("slideY", 7))


def _batch(polygons, ids):
    n = len(polygons)
    return pa.RecordBatch.from_pydict({
        "geometry": shapely.to_wkb(np.array(polygons, dtype=object)),
        "nucleus_id": np.asarray(ids, np.int64), "type_id": np.ones(n, np.int16),
        "area_um2": np.array([20.0] * (n - 1) + [np.nan]), "type_prob": np.full(n, 0.9)})


def test_geojson_keeps_ids_beyond_float32_and_outlines_valid_on_the_qupath_grid(tmp_path):
    """Ids above 2**24 survive exactly (a float32 measurement would round 420000001 to
    420000000); an outline that plain rounding to 0.01 px makes invalid (a 0.006 px slit
    closing up) is still valid; a NaN measurement is left out, not written as NaN."""
    slit = shapely.Polygon([(0, 0), (10, 0), (10, 10), (5.003, 10), (5.003, 2), (4.997, 2),
                            (4.997, 10), (0, 10)])
    assert slit.is_valid and not shapely.set_precision(slit, 0.01, mode="pointwise").is_valid
    square = shapely.box(20, 20, 30.123456, 30.987654)
    ids = [420_000_001, 2**24 + 1]
    out = tmp_path / "n.geojson.gz"
    write_feature_collection(out, [_batch([slit, square], ids)], ["background", "tumour"],
                             ["#000000", "#ff0000"], slide_id="s1")
    assert qupath_problems(out) == []
    with gzip.open(out, "rt", encoding="utf-8") as f:
        features = json.load(f)["features"]
    assert [f["properties"]["name"] for f in features] == ["420000001", "16777217"]
    assert features[0]["properties"]["measurements"] == {"area_um2": 20.0, "type_prob": 0.9}
    assert features[1]["properties"]["measurements"] == {"type_prob": 0.9}
    assert [30.12, 30.99] in features[1]["geometry"]["coordinates"][0]
    assert float(np.float32(ids[0])) != ids[0]  # why the id may not be a QuPath measurement


def test_qupath_rules_catch_what_qupath_refuses(tmp_path):
    good = {"type": "Feature", "id": str(nucleus_uuid("s", 1)),
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
            "properties": {"objectType": "detection", "name": "1",
                           "classification": {"name": "tumour", "color": [255, 0, 0]},
                           "measurements": {"area_um2": 3.0}}}
    cases = {
        "objectType": {"properties": {**good["properties"], "objectType": "annotation"}},
        "colour": {"properties": {**good["properties"], "classification": {"name": "t"}}},
        "finite number": {"properties": {**good["properties"], "measurements": {"id": "7"}}},
        "not closed": {"geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 1]]]}},
        "invalid polygon": {"geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [4, 4], [4, 0], [0, 4], [0, 0]]]}},
        "rounded": {"geometry": {"type": "Polygon", "coordinates": [[
            [0, 0], [10, 0], [10, 10], [5.003, 10], [5.003, 2], [4.997, 2], [4.997, 10], [0, 10],
            [0, 0]]]}},
        "UUID": {"id": 17},
    }
    path = tmp_path / "f.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [good]}))
    assert qupath_problems(path) == []
    for what, change in cases.items():
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [{**good, **change}]}))
        problems = qupath_problems(path)
        assert len(problems) == 1 and what in problems[0], (what, problems)


def test_overlay_draws_nuclei_in_type_colours_on_a_blank_background(tmp_path):
    d = _slide_dir(tmp_path)  # slide path in attrs does not exist: white background
    summary = export_slide(d, ExportConfig(overlay_max_px=256))
    img = np.asarray(Image.open(d / "overlay.png").convert("RGB"))
    assert img.shape == (128, 128, 3)  # level-0 size; no downsampling needed
    assert summary["overlay_mpp"] == pytest.approx(0.5)
    for hexcol in COLORS[1:]:
        assert (img == hex_to_rgb(hexcol)).all(axis=2).any()


def test_overlay_uses_the_slide_thumbnail_when_readable(tmp_path, shared_data):
    svs = shared_data / "slides" / "CMU-1-Small-Region.svs"
    st = svs.stat()
    d = _slide_dir(tmp_path, slide={"path": str(svs), "size": st.st_size, "mtime": st.st_mtime})
    export_slide(d, ExportConfig(overlay_max_px=64))
    img = np.asarray(Image.open(d / "overlay.png").convert("RGB"))
    assert img.shape == (64, 64, 3)
    assert img.std() > 5  # tissue, not a blank page


def test_empty_slide_exports_zero_counts(tmp_path):
    d = _slide_dir(tmp_path, empty=True)
    summary = export_slide(d, ExportConfig(geojson=True))
    assert summary["n_nuclei"] == 0 and summary["status"] == "no_tissue"
    with gzip.open(d / "nuclei.geojson.gz", "rt") as f:
        assert json.load(f) == {"type": "FeatureCollection", "features": []}
    assert qupath_problems(d / "nuclei.geojson.gz") == []
    assert (d / "overlay.png").is_file()


def test_cells_split_the_ring_between_touching_nuclei():
    """QuPath-style cells (#12 item 5): each nucleus expanded by d, the ring shared out between
    neighbours whose expansions meet, so that no two cells overlap and none covers another
    nucleus; a lone nucleus gets its whole ring."""
    from wsi_pipeline.export.geojson import CellMaker

    nuclei = [shapely.box(0, 0, 10, 10), shapely.box(12, 0, 22, 10), shapely.box(100, 100, 110, 108),
              shapely.Point(40, 40).buffer(4)]
    d = 5.0
    cells = CellMaker(shapely.to_wkb(np.array(nuclei, dtype=object)), d).cells(0, len(nuclei))
    for k in range(len(nuclei)):
        cell = cells[k]
        assert isinstance(cell, shapely.Polygon) and cell.is_valid
        assert cell.covers(nuclei[k])
        assert shapely.hausdorff_distance(cell.exterior, nuclei[k].exterior) <= d + 1e-6
        for j in range(len(nuclei)):
            if j != k:
                assert cell.intersection(cells[j]).area < 1e-6
                assert cell.intersection(nuclei[j]).area < 1e-6
    lone = nuclei[2].buffer(d, quad_segs=4)
    assert cells[2].area == pytest.approx(lone.area, rel=1e-9)
    # the 2 px gap between the touching pair is shared: the split runs down its middle
    assert cells[0].bounds[2] == pytest.approx(11.0) and cells[1].bounds[0] == pytest.approx(11.0)
    assert (cells[0].union(cells[1])).covers(shapely.box(10, 0, 12, 10))
    # batches give the same cells as one pass
    maker = CellMaker(shapely.to_wkb(np.array(nuclei, dtype=object)), d)
    both = np.concatenate([maker.cells(0, 1), maker.cells(1, 3)])
    assert all(a.equals(b) for a, b in zip(both, cells, strict=True))


def test_geojson_cells_are_qupath_cells_and_off_by_default(tmp_path):
    from wsi_pipeline.cohort.config import RunConfig

    d = _slide_dir(tmp_path)
    export_slide(d, ExportConfig(geojson=True))
    with gzip.open(d / "nuclei.geojson.gz", "rt", encoding="utf-8") as f:
        detections = {feat["id"]: feat for feat in json.load(f)["features"]}
    summary = export_slide(d, ExportConfig(geojson=True, geojson_cells=True, cell_expansion_um=5.0))
    assert qupath_problems(d / "nuclei.geojson.gz") == []
    with gzip.open(d / "nuclei.geojson.gz", "rt", encoding="utf-8") as f:
        cells = json.load(f)["features"]
    assert len(cells) == len(detections) == len(CENTRES)
    ring_px = 5.0 / summary["slide_mpp"]
    for feat in cells:
        props = feat["properties"]
        assert props["objectType"] == "cell"
        det = detections[feat["id"]]
        assert props["nucleusGeometry"] == det["geometry"]
        assert props["measurements"] == det["properties"]["measurements"]
        nucleus = shapely.geometry.shape(props["nucleusGeometry"])
        cell = shapely.geometry.shape(feat["geometry"])
        # the nuclei here stand apart: each cell is its nucleus grown by the whole ring
        assert cell.area == pytest.approx(nucleus.buffer(ring_px, quad_segs=4).area, rel=1e-3)
    # off by default, and then not part of the export stage's settings (finished exports stay valid)
    assert not ExportConfig().geojson_cells
    assert not {"geojson_cells", "cell_expansion_um"} & set(RunConfig().stage_configs()["export"])
    assert summary["provenance"]["config"]["export"]["cell_expansion_um"] == 5.0  # cells on: recorded
    export_slide(d, ExportConfig(geojson=True))
    recorded = json.loads((d / "summary.json").read_text())["provenance"]["config"]["export"]
    assert not {"geojson_cells", "cell_expansion_um"} & set(recorded)  # summary.json as before
    on = RunConfig.model_validate({"export": {"geojson_cells": True}}).stage_configs()["export"]
    assert on["geojson_cells"] and on["cell_expansion_um"] == 5.0


def test_formats_write_each_file_beside_the_table_and_list_it(tmp_path):
    """`export.formats` (run --formats geojson,csv): one file per format, named nuclei<suffix>,
    listed in summary.json after nuclei.parquet; --geojson and the list do not write it twice."""
    d = _slide_dir(tmp_path)
    summary = export_slide(d, ExportConfig(geojson=True, formats=["csv", "geojson"]))
    assert summary["outputs"][:3] == ["nuclei.parquet", "nuclei.geojson.gz", "nuclei.csv"]
    assert set(summary["export_timings_s"]) >= {"geojson", "csv"}
    table = pd.read_parquet(d / "nuclei.parquet")
    rows = pd.read_csv(d / "nuclei.csv")
    assert len(rows) == len(table) == len(CENTRES)
    np.testing.assert_allclose(rows["x"], table["x"])
    np.testing.assert_allclose(rows["y"], table["y"])
    assert qupath_problems(d / "nuclei.geojson.gz") == []


def test_formats_a_slide_cannot_have_are_refused_by_name():
    with pytest.raises(ValueError, match="mat: needs the label map, which only tile mode"):
        ExportConfig(formats=["mat"])
    with pytest.raises(ValueError, match="geoparquet: a slide's nuclei.parquet is always written"):
        ExportConfig(formats=["geoparquet"])
    with pytest.raises(ValueError, match="unknown output format 'xlsx'; known: geoparquet, geojson"):
        ExportConfig(formats=["xlsx"])
    assert "formats" not in ExportConfig().settings()  # finished exports stay valid


def test_each_slide_format_file_is_nuclei_and_its_suffix_and_an_export_output():
    """contract.FORMAT_FILES names what export writes per format; a rerun that redoes export
    removes or sets aside exactly these (cohort.stages.STAGE_OUTPUTS)."""
    from wsi_pipeline.cohort.stages import STAGE_OUTPUTS
    from wsi_pipeline.contract import FORMAT_FILES
    from wsi_pipeline.export.formats.base import output_format

    for name, file in FORMAT_FILES.items():
        assert file == "nuclei" + output_format(name).suffix, name
        assert file in STAGE_OUTPUTS["export"], name
        ExportConfig(formats=[name])  # a slide format
