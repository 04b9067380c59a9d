"""Per-nucleus haematoxylin/eosin optical densities (postproc.optical_density, postproc/od.py).

Synthetic slides whose nuclei have known colours check that the chunk tasks read the slide on
the maps' own pixel grid (a one-pixel slip at either resolution mixes background into some
nucleus and shows as min != max), with flag off nothing changes, and a real CMU crop through
`wsi-pipeline run --config` gives nuclei more haematoxylin than the tissue around them.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from PIL import Image

from tests.helpers.cohort_fixtures import (
    CMU_CROPS,
    MPP,
    cmu_crop,
    run_cli,
    tiny_checkpoint,
    write_pyramid_tiff,
)
from tests.helpers.maps_synth import CLASSES, disc_instances, oracle_maps, write_maps_zarr
from wsi_pipeline.cohort.config import RunConfig
from wsi_pipeline.contract import OD_COLUMNS, OD_QUPATH_NAMES, nuclei_schema
from wsi_pipeline.deconvolution import deconvolve, stain_matrix
from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.export.geojson import qupath_problems
from wsi_pipeline.export.stage import export_slide
from wsi_pipeline.postproc.config import ChunkingConfig, OpticalDensityConfig, PostprocConfig
from wsi_pipeline.postproc.od import nucleus_od_stats, slide_pixels, window_rgb
from wsi_pipeline.postproc.slide import postprocess_slide

MAP = 256
CHUNK = 128  # 2 x 2 chunks: nuclei straddle both seams
# map (row, col) of the nuclei and their colours (all different: a swapped read shows too)
CENTRES = [(40, 40), (60, 125), (130, 60), (128, 200), (200, 130), (215, 215)]
COLOURS = [(70, 30, 110), (90, 40, 140), (60, 20, 90), (110, 60, 150), (50, 35, 100), (80, 25, 120)]
TISSUE = (225, 160, 200)
R = 9  # map px
ON = PostprocConfig(optical_density=OpticalDensityConfig(enabled=True))


def _expected(colour) -> np.ndarray:
    return deconvolve(np.array([colour], np.uint8))[0]


def _synthetic_slide(d, scale: int):
    """A PNG slide (level-0 = `scale` x the map) with the nuclei painted in COLOURS, and oracle
    maps of the nuclei at map resolution. At scale 2 the painted discs reach 2.25 level-0 px past
    the map discs: a map pixel's resampling filter (bilinear, antialiased) reaches pixel
    centres 1.5 px away along each axis, 2.12 diagonally; a half-map-pixel slip reaches 2.5."""
    d.mkdir()
    side = MAP * scale
    rows, cols = np.indices((side, side))
    rgb = np.full((side, side, 3), 245, np.uint8)
    rgb[8:-8, 8:-8] = TISSUE
    radius = scale * R + (2.25 if scale > 1 else 0)
    for (r, c), colour in zip(CENTRES, COLOURS, strict=True):
        # map pixel c's centre is level-0 pixel coordinate c*s + (s - 1)/2 (inference.slide._Geometry.origin)
        cy, cx = r * scale + (scale - 1) / 2, c * scale + (scale - 1) / 2
        rgb[(rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2] = colour
    png = d / "slide.png"
    Image.fromarray(rgb).save(png)
    inst = disc_instances((MAP, MAP), CENTRES, R)
    types = np.where(inst > 0, 3, 0).astype(np.uint8)
    slide = {"path": str(png), "size": png.stat().st_size, "mtime": png.stat().st_mtime}
    maps = write_maps_zarr(d / "maps.zarr", oracle_maps(inst, types), CHUNK, scale=float(scale),
                           slide=slide)
    zarr.open_group(str(maps), mode="r+").attrs["origin"] = [(scale - 1) / 2] * 2
    return maps, inst, png


def _rows_by_centre(table, scale: int) -> list[int]:
    """Table row of each of CENTRES (nearest centroid)."""
    xy = np.column_stack([table.column("x").to_numpy(), table.column("y").to_numpy()])
    out = []
    for r, c in CENTRES:
        target = np.array([c * scale + (scale - 1) / 2, r * scale + (scale - 1) / 2])
        out.append(int(np.argmin(np.hypot(*(xy - target).T))))
    return out


@pytest.mark.parametrize("scale", [1, 2])
def test_known_colours_give_their_od_in_every_chunk(tmp_path, scale):
    maps, _, _ = _synthetic_slide(tmp_path / "s", scale)
    res = postprocess_slide(maps, tmp_path / "nuclei.parquet", ON, progress=False)
    assert res.n_chunks == 4 and res.n_nuclei == len(CENTRES)
    table = pq.read_table(res.out_path)
    assert table.schema.names == nuclei_schema(CLASSES, optical_density=True).names
    for row, colour in zip(_rows_by_centre(table, scale), COLOURS, strict=True):
        h, e, _ = _expected(colour).astype(np.float32)
        got = {c: table.column(c)[row].as_py() for c in OD_COLUMNS}
        # every pixel of the nucleus is its painted colour: mean = min = max, no spread
        for stain, value in (("hematoxylin", h), ("eosin", e)):
            for stat in ("mean", "min", "max"):
                assert got[f"{stain}_od_{stat}"] == pytest.approx(value, abs=1e-6), (stain, stat)
            assert got[f"{stain}_od_std"] == pytest.approx(0.0, abs=1e-6)
        assert h > 0.5  # these purples are haematoxylin-rich
    prov = json.loads(pq.read_schema(res.out_path).metadata[b"wsi_pipeline"])
    assert prov["postproc_config"]["optical_density"]["enabled"]
    rec = prov["optical_density"]
    np.testing.assert_allclose(rec["stain_matrix"], stain_matrix())
    assert rec["background"] == [255.0, 255.0, 255.0] and rec["od"] == "log10"


def test_window_pixels_are_the_maps_grid_and_a_slip_shows(tmp_path):
    maps, inst, png = _synthetic_slide(tmp_path / "s", 2)
    px = slide_pixels(OpticalDensityConfig(enabled=True), png, slide_mpp=0.125)
    n = len(CENTRES)
    exact = nucleus_od_stats(inst, window_rgb(px, 0, 0, (MAP, MAP), 0.25, 2.0), n, px)
    assert np.array_equal(exact["hematoxylin_od_min"], exact["hematoxylin_od_max"])
    # a window read one map pixel off (down, or right) no longer fits its labels
    for r0, c0 in ((1, 0), (0, 1)):
        rgb = window_rgb(px, r0, c0, (MAP - 1, MAP - 1), 0.25, 2.0)
        off = nucleus_od_stats(inst[: MAP - 1, : MAP - 1], rgb, n, px)
        assert np.any(off["hematoxylin_od_min"] < off["hematoxylin_od_max"] - 0.05)


def test_statistics_per_nucleus():
    labels = np.array([[1, 1, 0], [2, 1, 3]])
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., :] = np.array([[[120, 60, 160], [90, 40, 140], [255, 255, 255]],
                            [[200, 100, 180], [60, 20, 90], [140, 70, 150]]], np.uint8)
    px = slide_pixels(OpticalDensityConfig(enabled=True), "unused", 0.25)
    got = nucleus_od_stats(labels, rgb, 3, px)
    amounts = deconvolve(rgb)
    for k, stain in enumerate(("hematoxylin", "eosin")):
        for i in (1, 2, 3):
            v = amounts[labels == i, k]
            assert got[f"{stain}_od_mean"][i - 1] == pytest.approx(v.mean(), abs=1e-6)
            assert got[f"{stain}_od_min"][i - 1] == pytest.approx(v.min(), abs=1e-6)
            assert got[f"{stain}_od_max"][i - 1] == pytest.approx(v.max(), abs=1e-6)
            if v.size > 1:  # sample standard deviation, as QuPath's
                assert got[f"{stain}_od_std"][i - 1] == pytest.approx(v.std(ddof=1), abs=1e-6)
            else:
                assert np.isnan(got[f"{stain}_od_std"][i - 1])
    assert all(a.dtype == np.float32 and a.shape == (3,) for a in got.values())


def test_flag_off_changes_nothing_and_on_reaches_the_geojson(tmp_path):
    maps, _, png = _synthetic_slide(tmp_path / "s", 1)
    d = maps.parent
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(d / "tissue.png")
    a = postprocess_slide(maps, tmp_path / "default.parquet", PostprocConfig(), progress=False)
    off = PostprocConfig(optical_density={"enabled": False, "background": [240, 240, 240],
                                          "eosin": [0.1, 0.9, 0.4]})
    b = postprocess_slide(maps, tmp_path / "off.parquet", off, progress=False)
    # off, the settings leave no trace: same bytes, the schema and provenance of before
    assert a.out_path.read_bytes() == b.out_path.read_bytes()
    schema = pq.read_schema(a.out_path)
    assert schema.names == nuclei_schema(CLASSES).names and not set(OD_COLUMNS) & set(schema.names)
    prov = json.loads(schema.metadata[b"wsi_pipeline"])
    assert "optical_density" not in prov and "optical_density" not in prov["postproc_config"]
    assert set(prov["postproc_config"]) == set(PostprocConfig.model_fields) - {"optical_density"}
    default, disabled = RunConfig().stage_configs(), RunConfig(postproc=off).stage_configs()
    assert default == disabled and '"optical_density"' not in json.dumps(default)
    # on: the stage's settings (so its hash) and the record say so, with the vectors
    on = RunConfig.model_validate({"postproc": {"optical_density": {"enabled": True}}})
    rec = on.stage_configs()["postproc"]["postproc"]["optical_density"]
    assert rec["enabled"] and rec["hematoxylin"] == [0.65111, 0.70119, 0.29049]
    postprocess_slide(maps, d / "nuclei.parquet", ON, progress=False)
    summary = export_slide(d, ExportConfig(geojson=True, geojson_cells=True))
    assert summary["provenance"]["config"]["postproc"]["optical_density"]["enabled"]
    assert qupath_problems(d / "nuclei.geojson.gz") == []
    with gzip.open(d / "nuclei.geojson.gz", "rt", encoding="utf-8") as f:
        features = json.load(f)["features"]
    assert len(features) == len(CENTRES)
    table = pq.read_table(d / "nuclei.parquet").to_pandas().set_index("nucleus_id")
    for feat in features:
        assert feat["properties"]["objectType"] == "cell"
        meas = feat["properties"]["measurements"]
        row = table.loc[int(feat["properties"]["name"])]
        assert meas["Nucleus: Hematoxylin OD mean"] == pytest.approx(row["hematoxylin_od_mean"], abs=1e-4)
        assert meas["Nucleus: Eosin OD max"] == pytest.approx(row["eosin_od_max"], abs=1e-4)
        # std is 0 here (one colour a nucleus); names are QuPath's, none under the column names
        assert set(OD_QUPATH_NAMES.values()) <= set(meas) and not set(OD_COLUMNS) & set(meas)


def test_missing_or_changed_slide_is_one_clear_error(tmp_path):
    maps, _, png = _synthetic_slide(tmp_path / "s", 1)
    moved = png.with_name("moved.png")
    png.rename(moved)
    with pytest.raises(FileNotFoundError, match="slide.png: slide not found"):
        postprocess_slide(maps, tmp_path / "n.parquet", ON, progress=False)
    assert not (tmp_path / "n.parquet").exists()
    with pytest.raises(ValueError, match="changed since its maps were made"):
        Image.new("RGB", (8, 8)).save(png)
        postprocess_slide(maps, tmp_path / "n.parquet", ON, progress=False)
    # the cohort passes the slide it has: used instead of the recorded path
    res = postprocess_slide(maps, tmp_path / "n.parquet", ON, progress=False, slide_path=moved,
                            chunking=ChunkingConfig(workers=1))
    assert res.n_nuclei == len(CENTRES)


def test_real_slide_run_with_config_gives_haematoxylin_rich_nuclei(shared_data, tmp_path):
    """A CMU crop through `wsi-pipeline run --config` with the flag on (a tiny network fitted to
    call dark blobs nuclei): the nuclei hold more haematoxylin than the tissue around them."""
    rgb = cmu_crop(shared_data, *CMU_CROPS["cmu_a"])
    (tmp_path / "slides").mkdir()
    write_pyramid_tiff(tmp_path / "slides" / "cmu_a.tif", rgb, MPP)
    ckpt = tiny_checkpoint(tmp_path / "tiny.pt", fit_rgb=rgb, mpp=1.0)
    cfg = tmp_path / "od.yaml"
    cfg.write_text("postproc:\n  optical_density:\n    enabled: true\nexport:\n  geojson: true\n")
    res = run_cli("run", str(tmp_path / "slides"), "-o", str(tmp_path / "out"), "--checkpoint",
                  str(ckpt), "--workers", "0", "--config", str(cfg))
    assert res.returncode == 0, res.stdout
    d = tmp_path / "out" / "cmu_a"
    table = pq.read_table(d / "nuclei.parquet").to_pandas()
    assert len(table) > 20
    h_mean = table["hematoxylin_od_mean"].to_numpy()
    assert np.isfinite(h_mean).all() and np.isfinite(table["eosin_od_mean"]).all()
    assert (table["hematoxylin_od_min"] <= table["hematoxylin_od_mean"]).all()
    assert (table["hematoxylin_od_mean"] <= table["hematoxylin_od_max"]).all()
    # the tissue's own haematoxylin (pixels with stain, i.e. not glass), over the whole crop
    amounts = deconvolve(rgb.reshape(-1, 3))
    tissue = amounts[amounts[:, :2].sum(1) > 0.15]
    # (0.66 against 0.26 when written)
    assert np.median(h_mean) > np.median(tissue[:, 0]) + 0.2, (np.median(h_mean),
                                                               np.median(tissue[:, 0]))
    assert 0.1 < np.median(h_mean) < 2.0  # plausible OD for nuclei
    summary = json.loads((d / "summary.json").read_text())
    assert summary["provenance"]["config"]["postproc"]["optical_density"]["enabled"]
    with gzip.open(d / "nuclei.geojson.gz", "rt", encoding="utf-8") as f:
        features = json.load(f)["features"]
    assert len(features) == len(table)
    # every nucleus has its means; std dev is left out only for one-pixel nuclei (NaN, as QuPath)
    n_std = sum("Nucleus: Eosin OD std dev" in f["properties"]["measurements"] for f in features)
    assert all("Nucleus: Hematoxylin OD mean" in f["properties"]["measurements"] for f in features)
    assert n_std == int(table["eosin_od_std"].notna().sum()) > 0


def test_column_names_and_their_qupath_names():
    assert list(OD_COLUMNS) == [
        "hematoxylin_od_mean", "hematoxylin_od_std", "hematoxylin_od_min", "hematoxylin_od_max",
        "eosin_od_mean", "eosin_od_std", "eosin_od_min", "eosin_od_max"]
    assert [OD_QUPATH_NAMES[c] for c in OD_COLUMNS] == [
        "Nucleus: Hematoxylin OD mean", "Nucleus: Hematoxylin OD std dev",
        "Nucleus: Hematoxylin OD min", "Nucleus: Hematoxylin OD max",
        "Nucleus: Eosin OD mean", "Nucleus: Eosin OD std dev",
        "Nucleus: Eosin OD min", "Nucleus: Eosin OD max"]
    on = nuclei_schema(CLASSES, optical_density=True)
    assert on.names[-len(OD_COLUMNS) - 2:] == [*OD_COLUMNS, "geometry", "bbox"]
    assert nuclei_schema(CLASSES).names == [n for n in on.names if n not in OD_COLUMNS]
