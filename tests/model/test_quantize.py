"""model.quantize: calibration crops, the int8 file beside its checkpoint, and the engine running it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from tests.helpers.engine import prepared
from wsi_pipeline import contract
from wsi_pipeline.inference.config import InferConfig, TissueConfig
from wsi_pipeline.inference.slide import infer_slide
from wsi_pipeline.io.plain_image import PlainImageSlide
from wsi_pipeline.model import MultiTaskNet, load_checkpoint, save_checkpoint
from wsi_pipeline.model.openvino_net import OpenVINONet
from wsi_pipeline.model.predict import predict_batch
from wsi_pipeline.model.quantize import (
    Int8ModelError,
    calibration_crops,
    int8_model_path,
    load_int8_model,
    quantize_network,
    save_int8_model,
)
from wsi_pipeline.model.runtime import choose_runtime

pytest.importorskip("nncf", reason="model.quantize needs NNCF (the test extra installs it)")

CPU = torch.device("cpu")
CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """An H&E-like uint8 image: pink background, dark purple discs."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (230, 180, 210)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(size * size // 400):
        cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(3, 8)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (90, 50, 140)
    return image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = MultiTaskNet(encoder="resnet18", width=8).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, net, class_names=CLASSES, mpp=0.25)
    model = load_checkpoint(path)
    rng = np.random.default_rng(0)
    crops = calibration_crops([_blobs(rng, 160) for _ in range(3)], 12, 64, seed=0)
    save_int8_model(quantize_network(model.net, crops, model.sha256), int8_model_path(path))
    return model


def test_calibration_crops_are_seeded_sized_and_drawn_from_every_image():
    images = [np.full((100, 120, 3), k, np.uint8) for k in range(3)] + [np.zeros((40, 40, 3), np.uint8)]
    crops = calibration_crops(images, 7, 64, seed=1)
    assert len(crops) == 7 and all(c.shape == (64, 64, 3) and c.dtype == np.uint8 for c in crops)
    assert sorted({int(c[0, 0, 0]) for c in crops}) == [0, 1, 2]  # the 40² image is too small
    again = calibration_crops(images, 7, 64, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(crops, again, strict=True))
    with pytest.raises(ValueError, match="at least 64x64"):
        calibration_crops(images[3:], 2, 64, seed=0)


def test_int8_file_sits_beside_its_checkpoint_written_whole(checkpoint):
    xml = int8_model_path(checkpoint.path)
    assert xml.name == "tiny.int8.xml" and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["tiny.int8.bin", "tiny.int8.xml", "tiny.pt"]


def test_int8_network_follows_the_float_one(checkpoint):
    tiles = np.stack([_blobs(np.random.default_rng(k), 64) for k in range(1, 4)])
    net = prepared(checkpoint, "int8", "openvino")
    assert isinstance(net, OpenVINONet)
    got = predict_batch(net, tiles, precision="int8")
    want = predict_batch(prepared(checkpoint, "fp32", "torch"), tiles, precision="fp32")
    for key in ("ns", "hv", "nc"):
        assert got[key].shape == want[key].shape
        # a random network's activations quantise coarsely; a trained one's validation PQ moves
        # by < 0.005 (MODEL_CARD.md)
        assert float(np.abs(got[key] - want[key]).mean()) < 0.05, key
    assert choose_runtime(CPU, "int8", "openvino").record()["precision"].startswith("int8")


def test_int8_of_other_weights_or_none_is_refused_by_name(checkpoint, tmp_path):
    xml = int8_model_path(checkpoint.path)
    with pytest.raises(Int8ModelError, match=f"not from the checkpoint in use \\({'0' * 12}\\)"):
        load_int8_model(xml, "0" * 64)
    with pytest.raises(Int8ModelError, match="other.int8.xml: no int8 network.*quantize-model"):
        load_int8_model(tmp_path / "other.int8.xml", checkpoint.sha256)
    with pytest.raises(ValueError, match="openvino back end; here the back end is torch"):
        prepared(checkpoint, "int8", "torch")


def test_engine_runs_the_int8_network_and_records_it(checkpoint, tmp_path):
    rng = np.random.default_rng(5)
    canvas = np.full((320, 320, 3), 245, np.uint8)
    canvas[64:256, 64:256] = _blobs(rng, 192)
    Image.fromarray(canvas).save(tmp_path / "slide.png")
    slide = PlainImageSlide(tmp_path / "slide.png", 0.25, pixels=canvas)
    cfg = InferConfig(tile_size=128, margin=32, batch_size=4, reader_threads=1, precision="int8",
                      backend="openvino", tissue=TissueConfig(min_object_um2=100))
    infer_slide(slide, tmp_path / "out", cfg, checkpoint, progress=False)
    attrs = zarr.open_group(str(tmp_path / "out" / contract.MAPS), mode="r").attrs.asdict()
    assert attrs["backend"]["precision"].startswith("int8")
