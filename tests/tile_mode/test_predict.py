"""Tile mode: `wsi-pipeline predict-tiles` end to end, and its writers on ground-truth instances."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio
import torch
from click.testing import CliRunner
from PIL import Image

from wsi_pipeline.cli import main
from wsi_pipeline.export.geojson import qupath_problems
from wsi_pipeline.inference.config import DEFAULT_STRIDE, DEFAULT_TILE_SIZE
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.model import LoadedModel, MultiTaskNet, load_checkpoint, save_checkpoint
from wsi_pipeline.model.predictors import Predictor, load_predictor
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.postproc import PostprocConfig, SegmentationResult, segment_instances
from wsi_pipeline.stain import ReinhardNormalizer
from wsi_pipeline.tile_mode import predict as tile_predict
from wsi_pipeline.tile_mode.predict import (
    segment_image,
    write_overlay,
)

CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, MultiTaskNet(encoder="resnet18", width=8), class_names=CLASSES, mpp=0.25)
    return path


# A 'lab' whose images are darker and bluer than CoNSeP's (Lab mean and std per channel).
STAIN = ReinhardNormalizer(mean=np.array([55.0, 25.0, -25.0]), std=np.array([18.0, 12.0, 12.0]))


@pytest.fixture(scope="module")
def stain_checkpoint(tmp_path_factory):
    """The same weights as `checkpoint`, trained (so its meta says) with Reinhard normalisation."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_stain.pt"
    save_checkpoint(path, MultiTaskNet(encoder="resnet18", width=8), class_names=CLASSES, mpp=0.25,
                    meta={"stain": STAIN.to_meta()})
    return path


def _network_inputs(monkeypatch) -> list[np.ndarray]:
    seen: list[np.ndarray] = []

    def spy(net, image, **kw):
        seen.append(image)
        return predict_tiled(net, image, **kw)

    monkeypatch.setattr(tile_predict, "predict_tiled", spy)
    return seen


@pytest.fixture()
def input_dir(shared_data, tmp_path):
    src = shared_data / "consep_patches/train/images"
    d = tmp_path / "in"
    d.mkdir()
    a = np.asarray(Image.open(src / "train_3_000.jpg"))
    b = np.asarray(Image.open(src / "train_3_001.jpg"))
    Image.fromarray(a).save(d / "small.jpg")
    Image.fromarray(np.concatenate([a, b], axis=1)[:200]).save(d / "wide.png")  # 200 x 512
    (d / "broken.png").write_bytes(b"\x89PNG not really")
    (d / "notes.txt").write_text("ignored")
    return d


def test_cli_writes_mat_overlay_geojson_and_skips_unreadable(checkpoint, input_dir, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(out), "--checkpoint",
                                    str(checkpoint), "--overlay", "--geojson", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "broken.png" in res.output and "2 image(s) written" in res.output
    for stem, shape in [("small", (256, 256)), ("wide", (200, 512))]:
        mat = sio.loadmat(out / f"{stem}.mat")
        n = int(mat["inst_map"].max())
        assert mat["inst_map"].shape == shape and mat["inst_map"].dtype == np.int32
        assert mat["type_map"].shape == shape
        assert mat["inst_type"].shape == (n, 1) and mat["inst_centroid"].shape == (n, 2)
        assert mat["inst_uid"].shape == (n, 1)
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.geojson.gz").is_file()
        assert qupath_problems(out / f"{stem}.geojson.gz") == []
    assert not (out / "broken.mat").exists()


def test_cli_mpp_keeps_image_geometry(checkpoint, input_dir, tmp_path):
    """A 0.5 µm/px image is upsampled for the 0.25 µm/px model; outputs stay in its own pixels."""
    d = tmp_path / "half"
    d.mkdir()
    Image.open(input_dir / "wide.png").crop((0, 0, 150, 100)).save(d / "half.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict-tiles", str(d), str(out), "--checkpoint",
                                    str(checkpoint), "--mpp", "0.5", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sio.loadmat(out / "half.mat")["inst_map"].shape == (100, 150)


def test_cli_without_checkpoint(input_dir, tmp_path):
    from wsi_pipeline.model import CheckpointError, default_checkpoint_path

    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(tmp_path / "o"), "--device", "cpu"])
    try:
        default_checkpoint_path()
    except CheckpointError:
        assert res.exit_code != 0 and "no default weights shipped yet: pass --checkpoint" in res.output
    else:
        assert res.exit_code == 0, res.output


def test_cli_empty_dir(tmp_path, checkpoint):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["predict-tiles", str(tmp_path / "empty"), str(tmp_path / "o"),
                                    "--checkpoint", str(checkpoint)])
    assert res.exit_code != 0 and "no images" in res.output


def _engine(model: LoadedModel, backend: str = "torch") -> Predictor:
    """`model` prepared for the CPU as tile mode prepares it (PyTorch unless asked)."""
    return load_predictor(model, choose_runtime("cpu", "auto", backend), reuse=False)  # type: ignore[arg-type]


def test_segment_image_shapes(checkpoint):
    model = load_checkpoint(checkpoint)
    img = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    for mpp in (None, 0.5):
        result = segment_image(_engine(model), img, image_mpp=mpp, tile=128, stride=64)
        assert result.inst_map.shape == (90, 130)
        assert result.types.shape == (result.n,) and result.type_probs.shape[0] == result.n


@pytest.fixture()
def truth(shared_data):
    stem = "train_3_000"
    root = shared_data / "consep_patches/train"
    inst = np.load(root / "inst" / f"{stem}.npy")
    types_map = np.asarray(Image.open(root / "seg_mask" / f"{stem}.png"))
    ids = np.unique(inst)[1:]
    inst_map = np.searchsorted(np.concatenate([[0], ids]), inst).astype(np.int32)
    types = np.array([np.bincount(types_map[inst_map == i]).argmax() for i in range(1, ids.size + 1)])
    probs = np.eye(len(CLASSES), dtype=np.float32)[types]
    image = np.asarray(Image.open(root / "images" / f"{stem}.jpg"))
    return image, SegmentationResult(inst_map=inst_map, types=types.astype(np.int32), type_probs=probs)


def test_overlay_on_ground_truth(truth, checkpoint, tmp_path):
    image, result = truth
    model = load_checkpoint(checkpoint)
    write_overlay(tmp_path / "t.png", image, result.inst_map, result.types, model.class_colors)
    overlay = np.asarray(Image.open(tmp_path / "t.png"))
    assert overlay.shape == image.shape and (overlay != image).any()


def test_cli_match_selects_images(checkpoint, input_dir, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(out), "--checkpoint",
                                    str(checkpoint), "--match", "sm*", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.mat")) == ["small.mat"]
    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(out), "--checkpoint",
                                    str(checkpoint), "--match", "nothing*"])
    assert res.exit_code != 0 and "matching nothing*" in res.output


def test_cli_goes_on_after_any_per_image_error(checkpoint, input_dir, tmp_path, monkeypatch):
    """Not only unreadable files: an image whose processing fails is named and skipped."""
    real = tile_predict.predict_maps

    def fail_on_wide(predictor, image, **kw):
        if image.shape[:2] == (200, 512):
            raise ValueError("simulated failure")
        return real(predictor, image, **kw)

    monkeypatch.setattr(tile_predict, "predict_maps", fail_on_wide)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(out), "--checkpoint",
                                    str(checkpoint), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "failed wide.png: ValueError: simulated failure" in res.output
    assert "skipped broken.png" in res.output and "1 image(s) written" in res.output
    assert sorted(p.name for p in out.glob("*.mat")) == ["small.mat"]


def test_cli_fails_when_every_image_fails(checkpoint, input_dir, tmp_path, monkeypatch):
    def always_fail(*args, **kw):
        raise RuntimeError("boom")

    monkeypatch.setattr(tile_predict, "predict_maps", always_fail)
    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(tmp_path / "o"),
                                    "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert res.exit_code != 0
    assert "failed small.jpg: RuntimeError: boom" in res.output and "skipped broken.png" in res.output
    assert "all 3 image(s) failed" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_gpu_is_a_clear_error(checkpoint, input_dir, tmp_path):
    res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(tmp_path / "o"),
                                    "--checkpoint", str(checkpoint), "--device", "cuda"])
    assert res.exit_code == 1 and "no CUDA GPU is available" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert not (tmp_path / "o").exists()


def _same(a: SegmentationResult, b: SegmentationResult) -> None:
    np.testing.assert_array_equal(a.inst_map, b.inst_map)
    np.testing.assert_array_equal(a.types, b.types)
    np.testing.assert_array_equal(a.type_probs, b.type_probs)


def test_stain_checkpoint_predicts_as_on_the_pre_normalised_image(
        checkpoint, stain_checkpoint, shared_data, monkeypatch):
    """Tile mode normalises each image with its own statistics before the network."""
    image = np.asarray(Image.open(shared_data / "consep_patches/train/images/train_3_000.jpg"))
    plain, stained = load_checkpoint(checkpoint), load_checkpoint(stain_checkpoint)
    seen = _network_inputs(monkeypatch)
    result = segment_image(_engine(stained), image, tile=128, stride=64)
    np.testing.assert_array_equal(seen[0], STAIN(image))
    assert np.abs(seen[0].astype(int) - image).mean() > 10  # the target really differs
    _same(result, segment_image(_engine(plain), STAIN(image), tile=128, stride=64))
    # another mpp: normalised after resampling, at the model's mpp like the training images
    segment_image(_engine(stained), image[:100, :150], image_mpp=0.5, tile=128, stride=64)
    assert seen[-1].shape == (200, 300, 3)
    np.testing.assert_array_equal(
        seen[-1], STAIN(np.asarray(Image.fromarray(image[:100, :150]).resize(
            (300, 200), Image.Resampling.BICUBIC))))


def test_checkpoint_without_stain_predicts_exactly_as_before(checkpoint, shared_data, monkeypatch):
    image = np.asarray(Image.open(shared_data / "consep_patches/train/images/train_3_000.jpg"))
    model = load_checkpoint(checkpoint)
    assert "stain" not in model.meta
    seen = _network_inputs(monkeypatch)
    engine = _engine(model)
    result = segment_image(engine, image, tile=128, stride=64)
    assert seen[0] is image  # not even copied
    maps = predict_tiled(engine.net, image, tile=128, stride=64)
    _same(result, segment_instances(maps["ns"], maps["hv"], maps["nc"], mpp=0.25))


def test_image_without_tissue_is_not_normalised_with_a_warning(stain_checkpoint, caplog,
                                                               monkeypatch):
    blank = np.full((96, 96, 3), 242, np.uint8)
    seen = _network_inputs(monkeypatch)
    with caplog.at_level("WARNING", logger="wsi_pipeline.tile_mode.predict"):
        segment_image(_engine(load_checkpoint(stain_checkpoint)), blank, tile=128, stride=64,
                      name="glass.png")
    assert seen[0] is blank
    assert "glass.png: too little tissue" in caplog.text


def test_cli_tta_is_on_by_default_and_no_tta_turns_it_off(checkpoint, input_dir, tmp_path, monkeypatch):
    seen: list[bool] = []
    real = tile_predict.predict_tiled

    def spy(*args, tta=False, **kw):
        seen.append(tta)
        return real(*args, tta=tta, **kw)

    monkeypatch.setattr(tile_predict, "predict_tiled", spy)
    for flags, out in (([], "on"), (["--no-tta"], "off")):
        res = CliRunner().invoke(main, ["predict-tiles", str(input_dir), str(tmp_path / out),
                                        "--checkpoint", str(checkpoint), *flags])
        assert res.exit_code == 0, res.output
    n = len(seen) // 2
    assert seen[:n] == [True] * n and seen[n:] == [False] * n


@pytest.fixture()
def one_image(shared_data, tmp_path):
    d = tmp_path / "one"
    d.mkdir()
    Image.open(shared_data / "consep_patches/train/images/train_3_000.jpg").save(d / "a.png")
    return d


def _predict(checkpoint, images, out, *flags):
    res = CliRunner().invoke(main, ["predict-tiles", str(images), str(out), "--checkpoint",
                                    str(checkpoint), "--device", "cpu", "--no-tta", *flags])
    assert res.exit_code == 0, res.output
    return sio.loadmat(out / "a.mat")["inst_map"]


def test_cli_config_postproc_reaches_tile_mode(checkpoint, one_image, tmp_path):
    """A run config's post-processing settings segment the tiles, not the defaults."""
    config = tmp_path / "tuned.yaml"
    config.write_text("postproc:\n  ns_threshold: 0.6\n")
    default = _predict(checkpoint, one_image, tmp_path / "default")
    tuned = _predict(checkpoint, one_image, tmp_path / "tuned", "--config", str(config))
    image = np.asarray(Image.open(one_image / "a.png"))
    expected = segment_image(_engine(load_checkpoint(checkpoint), "auto"), image,
                             postproc=PostprocConfig(ns_threshold=0.6)).inst_map
    np.testing.assert_array_equal(tuned, expected)
    assert default.max() > 0 and not np.array_equal(tuned, default)  # the setting mattered


def test_cli_config_tile_grid_and_batch_and_flags_over_the_file(checkpoint, one_image, tmp_path,
                                                                monkeypatch):
    seen: list[dict] = []
    real = tile_predict.predict_tiled

    def spy(*args, **kw):
        seen.append({k: kw[k] for k in ("tile", "stride", "batch_size", "precision")})
        return real(*args, **kw)

    monkeypatch.setattr(tile_predict, "predict_tiled", spy)
    config = tmp_path / "grid.yaml"
    config.write_text("infer:\n  tile_size: 128\n  margin: 16\n  batch_size: 3\n  precision: fp32\n")
    _predict(checkpoint, one_image, tmp_path / "plain")
    _predict(checkpoint, one_image, tmp_path / "file", "--config", str(config))
    _predict(checkpoint, one_image, tmp_path / "flag", "--config", str(config), "--batch-size", "5")
    assert seen == [
        {"tile": DEFAULT_TILE_SIZE, "stride": DEFAULT_STRIDE, "batch_size": 8, "precision": "auto"},
        {"tile": 128, "stride": 96, "batch_size": 3, "precision": "fp32"},
        {"tile": 128, "stride": 96, "batch_size": 5, "precision": "fp32"},
    ]


def test_cli_config_errors_name_the_file_and_key(checkpoint, one_image, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("postproc:\n  ns_treshold: 0.6\ninfer:\n  margin: 200\n")
    res = CliRunner().invoke(main, ["predict-tiles", str(one_image), str(tmp_path / "o"),
                                    "--checkpoint", str(checkpoint), "--config", str(config)])
    assert res.exit_code != 0
    assert f"{config}: invalid configuration" in res.output
    assert "postproc.ns_treshold: unknown key" in res.output
    assert "infer: Value error, margin 200 leaves no crop" in res.output
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(main, ["predict-tiles", str(one_image), str(tmp_path / "o"),
                                    "--config", str(tmp_path / "missing.yaml")])
    assert res.exit_code != 0 and "missing.yaml: config file not found" in res.output


def test_cli_formats_write_one_file_per_format_per_image(checkpoint, one_image, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["predict-tiles", str(one_image), str(out), "--checkpoint",
                                    str(checkpoint), "--device", "cpu", "--no-tta",
                                    "--formats", "csv,geoparquet", "--geojson"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "a.geojson.gz", "a.parquet"]
    import pandas as pd

    assert len(pd.read_csv(out / "a.csv")) == len(pd.read_parquet(out / "a.parquet"))
    bad = CliRunner().invoke(main, ["predict-tiles", str(one_image), str(tmp_path / "o"),
                                    "--checkpoint", str(checkpoint), "--formats", "mat,tiff"])
    assert bad.exit_code != 0 and "unknown output format 'tiff'; known:" in bad.output
