"""QC sheet: full-resolution crops with outlines in the type colours, crop rules, heat map, stage."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.helpers.maps_synth import CLASSES, COLORS
from tests.helpers.qc_fixtures import RADIUS, qc_slide_dir
from wsi_pipeline.cohort.stages import STAGE_OUTPUTS, SlideStages, StageMarker
from wsi_pipeline.export.config import ExportConfig, QCSheetConfig
from wsi_pipeline.export.geojson import hex_to_rgb
from wsi_pipeline.export.qc_regions import DensityGrid, RegionGrid
from wsi_pipeline.export.stage import export_slide

# 64 px at 0.25 µm/px = 32 level-0 px: 1-4 nuclei per window where they are sparse
CFG = ExportConfig(qc_sheet=QCSheetConfig(crop_px=64, n_spread=4, min_nuclei_confidence=3))


def _nuclei(d):
    return pq.read_table(d / "nuclei.parquet", columns=["x", "y", "type_id", "type_prob"]).to_pandas()


def test_sheet_files_crops_and_record(tmp_path):
    d = qc_slide_dir(tmp_path)
    summary = export_slide(d, CFG)
    record = summary["qc_sheet"]
    assert record == json.loads((d / "qc" / "qc_sheet.json").read_text())
    assert "qc" in summary["outputs"] and "qc" in STAGE_OUTPUTS["export"]
    for name in (record["sheet"], record["density"]):
        with Image.open(d / name) as im:
            assert im.format == "PNG" and im.width > 100
    assert [c["kind"] for c in record["crops"]] == ["densest", "least_confident"] + ["spread"] * 4
    assert record["crop_mpp"] == 0.25 and record["class_colors"] == dict(zip(CLASSES, COLORS, strict=True))
    for crop in record["crops"]:
        assert crop["size"] == 32 and 0 <= crop["x0"] <= 256 - 32 and 0 <= crop["y0"] <= 256 - 32
        for key in ("raw", "outlines"):
            with Image.open(d / crop[key]) as im:
                assert im.size == (64, 64)
    boxes = [(c["x0"], c["y0"]) for c in record["crops"]]
    for i, (xa, ya) in enumerate(boxes):  # no two crops overlap
        for xb, yb in boxes[i + 1:]:
            assert abs(xa - xb) >= 32 or abs(ya - yb) >= 32
    # the sheet holds the crops at full resolution (the outlined one beside the raw one)
    sheet = np.asarray(Image.open(d / record["sheet"]).convert("RGB"))
    drawn = np.asarray(Image.open(d / record["crops"][0]["outlines"]).convert("RGB"))
    found = any((sheet[r : r + 64, c : c + 64] == drawn).all()
                for r in range(sheet.shape[0] - 63) for c in range(sheet.shape[1] - 63)
                if (sheet[r, c] == drawn[0, 0]).all() and (sheet[r + 63, c + 63] == drawn[63, 63]).all())
    assert found


def test_densest_and_least_confident_windows_are_found(tmp_path):
    d = qc_slide_dir(tmp_path)
    record = export_slide(d, CFG)["qc_sheet"]
    crops = {c["kind"]: c for c in record["crops"]}
    dense, doubt = crops["densest"], crops["least_confident"]
    assert dense["x0"] + 16 < 128 and dense["y0"] + 16 < 128  # the crowded quadrant
    assert doubt["x0"] + 16 > 128 and doubt["y0"] + 16 > 128  # where types were uncertain
    assert doubt["mean_type_prob"] < 0.7 < dense["mean_type_prob"]
    nuclei = _nuclei(d)
    for crop in (dense, doubt):
        inside = ((nuclei.x >= crop["x0"]) & (nuclei.x < crop["x0"] + 32)
                  & (nuclei.y >= crop["y0"]) & (nuclei.y < crop["y0"] + 32))
        assert crop["n_nuclei"] == int(inside.sum()) > 0
    spread = [c for c in record["crops"] if c["kind"] == "spread"]
    assert len({(c["x0"] + 16 >= 128, c["y0"] + 16 >= 128) for c in spread}) >= 3  # over the slide


def test_outlines_are_drawn_in_the_geojson_type_colours_where_the_nuclei_are(tmp_path):
    d = qc_slide_dir(tmp_path)  # the slide file does not exist: crops are white under the outlines
    summary = export_slide(d, CFG.model_copy(update={"geojson": True}))
    with gzip.open(d / "nuclei.geojson.gz", "rt") as f:
        geo_colors = {feat["properties"]["classification"]["name"]:
                      tuple(feat["properties"]["classification"]["color"])
                      for feat in json.load(f)["features"]}
    record = summary["qc_sheet"]
    assert not record["slide_pixels"] and "not found" in record["note"]
    nuclei = _nuclei(d)
    seen, checked = set(), 0
    for crop in record["crops"]:
        raw = np.asarray(Image.open(d / crop["raw"]).convert("RGB"))
        drawn = np.asarray(Image.open(d / crop["outlines"]).convert("RGB"))
        assert (raw == 255).all()
        x0, y0 = crop["x0"], crop["y0"]
        inside = nuclei[(nuclei.x >= x0 + 6) & (nuclei.x < x0 + 26)
                        & (nuclei.y >= y0 + 6) & (nuclei.y < y0 + 26)]  # whole inside the crop
        checked += len(inside)
        for n in inside.itertuples():
            name = CLASSES[n.type_id]
            rgb = np.array(geo_colors[name])
            assert tuple(hex_to_rgb(COLORS[n.type_id])) == tuple(rgb)
            cr, cc = (n.y - y0) * 2, (n.x - x0) * 2  # crop px are half a level-0 px
            ring = np.hypot(*np.mgrid[0:64, 0:64] - np.array([cr, cc])[:, None, None] + 0.5)
            near = (ring > RADIUS - 3) & (ring < RADIUS + 2)
            on = (drawn == rgb).all(axis=2)
            assert on[near].sum() >= 10, (crop["kind"], name)  # its outline is there...
            assert not on[ring < RADIUS - 4].any()  # ...and the inside is left as it was
            seen.add(name)
    assert seen == set(CLASSES[1:]) and checked >= 5


def test_crops_are_read_from_the_slide_at_the_model_pixel_size(tmp_path, shared_data):
    svs = shared_data / "slides" / "CMU-1-Small-Region.svs"
    st = svs.stat()
    d = qc_slide_dir(tmp_path, slide={"path": str(svs), "size": st.st_size, "mtime": st.st_mtime})
    record = export_slide(d, CFG)["qc_sheet"]
    assert record["slide_pixels"] and record["note"] is None
    from wsi_pipeline.io import open_slide

    crop = record["crops"][0]
    with open_slide(svs, mpp=0.5) as slide:
        expect = slide.read_region_at_mpp(crop["x0"], crop["y0"], (64, 64), 0.25)
    raw = np.asarray(Image.open(d / crop["raw"]).convert("RGB"))
    np.testing.assert_array_equal(raw, expect)


def test_crops_are_the_same_on_every_run(tmp_path):
    d = qc_slide_dir(tmp_path)
    first = export_slide(d, CFG)["qc_sheet"]
    outlines = (d / first["crops"][2]["outlines"]).read_bytes()
    shutil.rmtree(d / "qc")
    second = export_slide(d, CFG)["qc_sheet"]
    assert second == first
    assert (d / second["crops"][2]["outlines"]).read_bytes() == outlines


def test_slide_without_nuclei_gets_a_sheet_without_crops(tmp_path):
    d = qc_slide_dir(tmp_path, empty=True)
    record = export_slide(d, CFG)["qc_sheet"]
    assert record["crops"] == [] and (d / record["sheet"]).is_file()


def test_sheet_can_be_switched_off(tmp_path):
    d = qc_slide_dir(tmp_path)
    summary = export_slide(d, ExportConfig(qc_sheet=QCSheetConfig(enabled=False)))
    assert summary["qc_sheet"] is None and not (d / "qc").exists() and "qc" not in summary["outputs"]


def test_export_marker_promises_the_sheet(tmp_path):
    """A deleted qc/ folder undoes the export stage (resume redoes it); begin() removes it."""
    d = qc_slide_dir(tmp_path)
    export_slide(d, CFG)
    stages = SlideStages(d)
    stages.finish(StageMarker(stage="export", config_hash="h", model_sha256="m", version="t", seconds=1))
    assert "qc" in stages.read("export").outputs and stages.is_done("export", "h", "m")
    shutil.rmtree(d / "qc")
    assert not stages.is_done("export", "h", "m")
    export_slide(d, CFG)
    stages.begin("export")
    assert not (d / "qc").exists()


def test_density_grid_counts_nuclei_per_mm2_on_tissue():
    grid = DensityGrid((1000, 600), slide_mpp=0.5, bin_um=100)  # bins of 200 level-0 px
    assert grid.shape == (3, 5) and grid.bin_um == 100
    grid.add(np.array([10.0, 20, 30, 450]), np.array([10.0, 15, 20, 590]))
    mask = np.zeros((6, 10), bool)  # 100 level-0 px per mask pixel
    mask[:2, :2] = True
    grid.set_tissue(mask, 100.0)
    per_mm2 = grid.per_mm2()
    assert per_mm2[0, 0] == pytest.approx(3 / 0.01)  # 3 nuclei on 100 x 100 µm
    assert per_mm2[2, 2] == pytest.approx(1 / 0.01)  # off tissue but a nucleus: shown
    assert np.isnan(per_mm2[1, 4])  # neither tissue nor nuclei: transparent
    assert grid.tissue[0, 0] == 1.0 and grid.tissue[0, 1] == 0.0


def test_region_rules_on_a_count_grid():
    """Spread windows cover the four quadrants of a square of tissue; none overlap."""
    grid = RegionGrid((800, 800), 100)  # windows of 100 px, bins of 50
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 800, (4000, 2))
    prob = np.where((xy[:, 0] > 600) & (xy[:, 1] < 200), 0.4, 0.9)
    grid.add(xy[:, 0], xy[:, 1], prob)
    crowd = rng.uniform(300, 380, (500, 2))
    grid.add(crowd[:, 0], crowd[:, 1], np.full(500, 0.95))
    chosen = grid.choose(4)
    kinds = [c.kind for c in chosen]
    assert kinds == ["densest", "least_confident", "spread", "spread", "spread", "spread"]
    dense, doubt = chosen[0], chosen[1]
    assert 250 <= dense.x0 <= 350 and 250 <= dense.y0 <= 350
    assert doubt.x0 >= 550 and doubt.y0 <= 150
    assert doubt.mean_type_prob < 0.6
    quadrants = {(c.x0 + 50 >= 400, c.y0 + 50 >= 400) for c in chosen[2:]}
    assert len(quadrants) == 4
    for i, a in enumerate(chosen):
        assert 0 <= a.x0 <= 700 and 0 <= a.y0 <= 700
        for b in chosen[i + 1:]:
            assert abs(a.x0 - b.x0) >= 100 or abs(a.y0 - b.y0) >= 100
    assert grid.choose(4) == chosen  # no randomness
