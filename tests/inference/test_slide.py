"""infer_slide: maps.zarr layout, agreement with tiled inference, chunk invariance, edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from wsi_pipeline import contract
from wsi_pipeline.inference.config import InferConfig, TissueConfig
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.inference.slide import STAIN_TILES, infer_slide
from wsi_pipeline.io import MissingMppError, open_slide
from wsi_pipeline.io.plain_image import PlainImageSlide
from wsi_pipeline.model import MultiTaskNet, load_checkpoint, save_checkpoint
from wsi_pipeline.stain import ReinhardNormalizer

CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")
# small tiles, and tissue islands far smaller than real sections still count as tissue
FAST = {"tile_size": 128, "margin": 32, "batch_size": 8, "reader_threads": 2, "precision": "fp32",
        "tissue": TissueConfig(min_object_um2=500)}


# A stain target darker and bluer than CoNSeP's (Lab mean and std per channel).
STAIN = ReinhardNormalizer(mean=np.array([55.0, 25.0, -25.0]), std=np.array([18.0, 12.0, 12.0]))


def tiny_model(tmp_path_factory, mpp: float, meta: dict | None = None):
    torch.manual_seed(0)
    net = MultiTaskNet(encoder="resnet18", width=8)
    path = tmp_path_factory.mktemp("ckpt") / f"tiny_{mpp}.pt"
    save_checkpoint(path, net, class_names=CLASSES, mpp=mpp, meta=meta)
    return load_checkpoint(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory, 0.25)


@pytest.fixture(scope="module")
def tissue_canvas(shared_data) -> np.ndarray:
    """A 448 x 576 white 'slide' with a 128 x 256 island of real H&E in it."""
    patch = np.asarray(Image.open(shared_data / "consep_patches/train/images/train_2_000.jpg"))
    canvas = np.full((448, 576, 3), 245, np.uint8)
    canvas[160:288, 160:416] = patch[:128]
    return canvas


def fake_slide(pixels: np.ndarray, mpp: float, tmp_path) -> PlainImageSlide:
    path = tmp_path / "slide.png"
    Image.fromarray(pixels).save(path)
    return PlainImageSlide(path, mpp, pixels=pixels)


def test_maps_layout_and_agreement_with_tiled(model, tissue_canvas, tmp_path):
    slide = fake_slide(tissue_canvas, 0.25, tmp_path)
    cfg = InferConfig(chunk_size=192, **FAST)
    result = infer_slide(slide, tmp_path / "out", cfg, model, progress=False)
    assert not result.no_tissue and result.n_tiles > 0 and result.n_runs >= result.n_tiles
    assert not (tmp_path / "out" / "maps.zarr.partial").exists()
    assert (tmp_path / "out" / "tissue.png").is_file()
    assert json.loads((tmp_path / "out" / "tissue.json").read_text())["mm2"] == pytest.approx(
        result.tissue_mm2)
    g = zarr.open_group(str(result.maps), mode="r")
    assert g["ns"].shape == (448, 576) and g["ns"].dtype == np.float16 and g["ns"].chunks == (192, 192)
    assert g["hv"].shape == (2, 448, 576) and g["hv"].chunks == (2, 192, 192)
    assert g["nc"].shape == (5, 448, 576) and g["nc"].dtype == np.uint8
    assert g["inferred"].dtype == bool
    attrs = dict(g.attrs)
    for key in ("mpp", "slide_mpp", "scale", "level0_size", "map_size", "class_names", "class_colors",
                "model_sha256", "config", "wsi_pipeline_version", "slide", "tissue_mm2"):
        assert key in attrs, key
    # the stage contract lists exactly what inference writes
    assert sorted(attrs) == sorted(contract.MAPS_ATTRIBUTES)
    assert sorted(g.array_keys()) == sorted([contract.ARRAY_NS, contract.ARRAY_HV, contract.ARRAY_NC,
                                             contract.ARRAY_INFERRED, contract.ARRAY_TISSUE])
    assert contract.TISSUE_MPP_ATTR in g[contract.ARRAY_TISSUE].attrs
    assert attrs["scale"] == 1.0 and attrs["map_size"] == [576, 448]
    assert attrs["model_sha256"] == model.sha256 and attrs["class_names"] == list(CLASSES)
    assert attrs["stain"] is None and "stain" not in result.timings  # trained without it

    inferred = g["inferred"][:]
    assert inferred[160:288, 160:416].all()  # the whole island
    assert not inferred[:64].any() and not inferred[:, 512:].any()  # far from it: skipped
    # where inferred, the maps equal tiled inference of the same pixels on the same grid
    ref = predict_tiled(model.net, tissue_canvas, tile=128, stride=64, precision="fp32")
    ns = g["ns"][:].astype(np.float32)
    interior = inferred.copy()
    interior[:64], interior[-64:], interior[:, :64], interior[:, -64:] = False, False, False, False
    np.testing.assert_allclose(ns[interior], ref["ns"][interior], atol=2e-3)
    np.testing.assert_allclose(g["hv"][:][:, interior], ref["hv"][:, interior], atol=2e-3)
    nc_ref = np.rint(ref["nc"] * 255)
    assert np.abs(g["nc"][:][:, interior].astype(int) - nc_ref[:, interior]).max() <= 1
    assert (ns[~inferred] == 0).all()


def test_maps_do_not_depend_on_chunk_size(model, tissue_canvas, tmp_path):
    slide = fake_slide(tissue_canvas, 0.25, tmp_path)
    a = infer_slide(slide, tmp_path / "a", InferConfig(chunk_size=128, **FAST), model, progress=False)
    b = infer_slide(slide, tmp_path / "b", InferConfig(chunk_size=512, **FAST), model, progress=False)
    ga, gb = zarr.open_group(str(a.maps), mode="r"), zarr.open_group(str(b.maps), mode="r")
    np.testing.assert_array_equal(ga["inferred"][:], gb["inferred"][:])
    np.testing.assert_allclose(ga["ns"][:].astype(float), gb["ns"][:].astype(float), atol=2e-3)
    assert a.n_tiles == b.n_tiles


def test_resampled_slide_maps_to_level0(model, tissue_canvas, tmp_path):
    """A 0.5 µm/px slide gives a map twice its size; map (r, c) <-> level-0 (c*scale, r*scale)."""
    small = np.asarray(Image.fromarray(tissue_canvas).resize((288, 224), Image.Resampling.BILINEAR))
    slide = fake_slide(small, 0.5, tmp_path)
    result = infer_slide(slide, tmp_path / "out", InferConfig(chunk_size=256, **FAST), model,
                         progress=False)
    g = zarr.open_group(str(result.maps), mode="r")
    assert g.attrs["scale"] == 0.5 and g.attrs["map_size"] == [576, 448]
    assert g.attrs["level0_size"] == [288, 224]
    inferred = g["inferred"][:]
    assert inferred[160:288, 160:416].all() and not inferred[:64].any()


def test_blank_slide_gives_empty_valid_maps(model, tmp_path):
    slide = fake_slide(np.full((300, 400, 3), 250, np.uint8), 0.25, tmp_path)
    result = infer_slide(slide, tmp_path / "out", InferConfig(**FAST), model, progress=False)
    assert result.no_tissue and result.n_tiles == 0 and result.tissue_mm2 == 0
    g = zarr.open_group(str(result.maps), mode="r")
    assert g["ns"].shape == (300, 400) and not g["inferred"][:].any() and (g["ns"][:] == 0).all()
    assert g.attrs["tissue_mm2"] == 0


def test_interrupted_run_leaves_only_partial(model, tissue_canvas, tmp_path, monkeypatch):
    slide = fake_slide(tissue_canvas, 0.25, tmp_path)
    from wsi_pipeline.model.predictors import Predictor

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(Predictor, "predict_compact", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        infer_slide(slide, tmp_path / "out", InferConfig(**FAST), model, progress=False)
    assert (tmp_path / "out" / "maps.zarr.partial").exists()
    assert not (tmp_path / "out" / "maps.zarr").exists()


@pytest.fixture(scope="module")
def stain_model(tmp_path_factory):
    """`model`'s weights, trained (so its meta says) with Reinhard stain normalisation."""
    return tiny_model(tmp_path_factory, 0.25, meta={"stain": STAIN.to_meta()})


def _count_source_stats(monkeypatch) -> list:
    """Every source estimate made, as (pixels, statistics)."""
    calls: list = []
    real = ReinhardNormalizer.source_stats

    def spy(self, pixels):
        calls.append((pixels, real(self, pixels)))
        return calls[-1][1]

    monkeypatch.setattr(ReinhardNormalizer, "source_stats", spy)
    return calls


def test_slide_is_stain_normalised_with_one_estimate(stain_model, tissue_canvas, tmp_path,
                                                     monkeypatch):
    """One source estimate per slide, from pooled tissue tiles at the model's mpp, recorded in
    the maps' provenance; every tile then goes through that same transform, so the maps equal
    tiled inference of the whole slide normalised at once (no seams between tiles)."""
    calls = _count_source_stats(monkeypatch)
    slide = fake_slide(tissue_canvas, 0.25, tmp_path)
    result = infer_slide(slide, tmp_path / "out", InferConfig(chunk_size=192, **FAST), stain_model,
                         progress=False)
    assert len(calls) == 1
    pixels, stats = calls[0]
    n_tiles = len(pixels) // (128 * 128)
    assert 1 <= n_tiles <= STAIN_TILES and len(pixels) == n_tiles * 128 * 128
    g = zarr.open_group(str(result.maps), mode="r")
    record = g.attrs["stain"]
    assert record == {**STAIN.to_meta(), "n_tiles": n_tiles, "source": stats.to_meta()}
    assert "stain" in result.timings

    inferred = g["inferred"][:]
    interior = inferred.copy()
    interior[:64], interior[-64:], interior[:, :64], interior[:, -64:] = False, False, False, False
    ref = predict_tiled(stain_model.net, STAIN.apply(tissue_canvas, stats), tile=128, stride=64,
                        precision="fp32")
    np.testing.assert_allclose(g["ns"][:].astype(np.float32)[interior], ref["ns"][interior], atol=2e-3)
    raw = predict_tiled(stain_model.net, tissue_canvas, tile=128, stride=64, precision="fp32")
    assert np.abs(raw["ns"][interior] - ref["ns"][interior]).max() > 0.01  # normalisation mattered


def test_slide_too_pale_for_an_estimate_runs_unnormalised(stain_model, tmp_path, monkeypatch,
                                                          caplog):
    """Tissue the detector accepts but too faint for a stain estimate: a warning, no
    normalisation, and the slide still completes (a cohort never stops for it)."""
    calls = _count_source_stats(monkeypatch)
    canvas = np.full((448, 576, 3), 245, np.uint8)
    canvas[160:288, 160:416] = (235, 200, 225)  # pale pink: tissue, but no stained pixel
    slide = fake_slide(canvas, 0.25, tmp_path)
    with caplog.at_level("WARNING", logger="wsi_pipeline.inference.slide"):
        result = infer_slide(slide, tmp_path / "out", InferConfig(**FAST), stain_model,
                             progress=False)
    assert not result.no_tissue and len(calls) == 1 and calls[0][1] is None
    assert "too little tissue" in caplog.text
    g = zarr.open_group(str(result.maps), mode="r")
    assert g.attrs["stain"]["source"] is None and g.attrs["stain"]["method"] == "reinhard"
    ref = predict_tiled(stain_model.net, canvas, tile=128, stride=64, precision="fp32")
    inferred = g["inferred"][:]
    np.testing.assert_allclose(g["ns"][:].astype(np.float32)[inferred], ref["ns"][inferred], atol=2e-3)


def test_blank_slide_with_stain_model_estimates_nothing(stain_model, tmp_path, monkeypatch):
    calls = _count_source_stats(monkeypatch)
    slide = fake_slide(np.full((300, 400, 3), 250, np.uint8), 0.25, tmp_path)
    result = infer_slide(slide, tmp_path / "out", InferConfig(**FAST), stain_model, progress=False)
    assert result.no_tissue and not calls
    record = zarr.open_group(str(result.maps), mode="r").attrs["stain"]
    assert record["n_tiles"] == 0 and record["source"] is None


def test_real_slide_end_to_end(shared_data, tmp_path_factory, tmp_path):
    """CMU through OpenSlide, with a model working at 4 µm/px (downsampling path, few tiles)."""
    model = tiny_model(tmp_path_factory, 4.0)
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        result = infer_slide(slide, tmp_path, InferConfig(**FAST), model, progress=False)
    g = zarr.open_group(str(result.maps), mode="r")
    assert g.attrs["map_size"] == [277, 371]  # ceil(2220 * 0.499 / 4), ceil(2967 * 0.499 / 4)
    assert 0.4 < result.tissue_mm2 < 1.0
    inferred = g["inferred"][:]
    assert 0.3 < inferred.mean() < 0.9  # coarse 256 µm tiles: some background is skipped
    assert g.attrs["slide"]["size"] == 1938955


def test_slide_without_mpp_fails_before_writing(shared_data, model, tmp_path):
    path = shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as slide, pytest.raises(MissingMppError, match="tcga-cr-7395"):
        infer_slide(slide, tmp_path, InferConfig(**FAST), model, progress=False)
    assert not any(tmp_path.iterdir())


def test_config_rejects_stride_inside_margin():
    with pytest.raises(ValueError, match="margin"):
        InferConfig(tile_size=256, margin=32, stride=200)
    assert InferConfig().effective_stride == 192


def test_progress_bar_counts_the_tiles_the_log_names(model, tissue_canvas, tmp_path, monkeypatch,
                                                     caplog):
    """Tiles straddling a chunk-row boundary run twice; the bar still counts tiles, so its total
    is the number in the log line, and it ends full."""
    import wsi_pipeline.inference.slide as infer_mod

    bars = []

    class Bar:
        def __init__(self, total, **kw):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(infer_mod, "tqdm", Bar)
    slide = fake_slide(tissue_canvas, 0.25, tmp_path)
    with caplog.at_level("INFO", logger="wsi_pipeline.inference.slide"):
        result = infer_slide(slide, tmp_path / "out", InferConfig(chunk_size=96, **FAST), model)
    assert result.n_runs > result.n_tiles  # the case that made bar and log disagree
    assert [(b.total, b.n) for b in bars] == [(result.n_tiles, result.n_tiles)]
    line = next(r.getMessage() for r in caplog.records if " tiles (" in r.getMessage())
    assert f"{result.n_tiles} tiles (+{result.n_runs - result.n_tiles} runs" in line
