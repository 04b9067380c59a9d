"""Tiled inference equals whole-image inference away from tile margins; predict_batch contracts."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.engine import prepared
from wsi_pipeline.inference import config as inference_config
from wsi_pipeline.inference.config import (
    DEFAULT_MARGIN,
    DEFAULT_STRIDE,
    DEFAULT_TILE_SIZE,
    InferConfig,
)
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.model import MultiTaskNet
from wsi_pipeline.model.predict import predict_batch, predict_batch_compact
from wsi_pipeline.tile_mode import predict as tile_predict


@pytest.fixture(scope="module")
def net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(encoder="resnet18", width=8).eval()


@pytest.fixture(scope="module")
def image(shared_data) -> np.ndarray:
    patch = np.asarray(Image.open(shared_data / "consep_patches/train/images/train_1_000.jpg"))
    return np.ascontiguousarray(np.concatenate([patch, patch[:, ::-1]], axis=1)[:200, :300])


def whole_image(net, img: np.ndarray, offset: int) -> dict[str, np.ndarray]:
    """One forward pass over the image, reflect-padded like the tiler pads it (tile origins align)."""
    h, w = img.shape[:2]
    ph, pw = -(-(h + 2 * offset) // 32) * 32, -(-(w + 2 * offset) // 32) * 32
    padded = np.pad(img, ((offset, ph - h - offset), (offset, pw - w - offset), (0, 0)), mode="reflect")
    out = predict_batch(net, padded[None], "cpu", "fp32")
    return {k: v[0][..., offset : offset + h, offset : offset + w] for k, v in out.items()}


@pytest.mark.parametrize("tile,stride", [(128, 64), (256, 192)])
def test_tiled_equals_whole_image_in_interior(net, image, tile, stride):
    tiled = predict_tiled(net, image, tile=tile, stride=stride, batch_size=4, precision="fp32")
    whole = whole_image(net, image, (tile - stride) // 2)
    for key in ("ns", "hv", "nc"):
        assert tiled[key].shape == whole[key].shape
        diff = np.abs(tiled[key] - whole[key])[..., 32:-32, 32:-32]
        assert diff.max() < 1e-4, (key, diff.max())
    assert whole["hv"].std() > 0.05  # the comparison is not between constants


def test_margin_matters(net, image):
    """Without a margin (stride == tile) the seams show: the check above has teeth."""
    whole = whole_image(net, image, 0)
    no_margin = predict_tiled(net, image, tile=64, stride=64, precision="fp32")
    with_margin = predict_tiled(net, image, tile=128, stride=64, precision="fp32")
    whole64 = whole_image(net, image, 32)
    err_none = np.abs(no_margin["hv"] - whole["hv"])[:, 32:-32, 32:-32].max()
    err_margin = np.abs(with_margin["hv"] - whole64["hv"])[:, 32:-32, 32:-32].max()
    assert err_none > 10 * err_margin


@pytest.mark.parametrize("shape", [(50, 70), (33, 300), (257, 64)])
def test_any_image_size(net, shape):
    img = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    out = predict_tiled(net, img, tile=64, stride=32, batch_size=3, precision="fp32")
    assert out["ns"].shape == shape
    assert out["hv"].shape == (2, *shape)
    assert out["nc"].shape == (5, *shape)
    np.testing.assert_allclose(out["nc"].sum(0), 1.0, atol=1e-5)


def test_predict_tiled_rejects_bad_input(net):
    with pytest.raises(ValueError):
        predict_tiled(net, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        predict_tiled(net, np.zeros((10, 10, 3), np.uint8), tile=48, stride=16)


def test_predict_batch_contract_and_precisions(net):
    batch = np.random.default_rng(1).integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)
    ref = predict_batch(net, batch, "cpu", "fp32")
    assert ref["ns"].shape == (2, 64, 96) and ref["ns"].dtype == np.float32
    assert ref["hv"].shape == (2, 2, 64, 96) and np.abs(ref["hv"]).max() <= 1
    assert ref["nc"].shape == (2, 5, 64, 96)
    assert ((ref["ns"] >= 0) & (ref["ns"] <= 1)).all()
    fast_net = prepared(net, "bf16")  # folded, bf16 weights
    fast = predict_batch(fast_net, batch, "cpu", "bf16")
    for key in ref:
        np.testing.assert_allclose(fast[key], ref[key], atol=0.05)
    compact = predict_batch_compact(net, batch, "cpu", "fp32")
    assert compact["ns"].dtype == np.float16 and compact["nc"].dtype == np.uint8
    np.testing.assert_allclose(compact["ns"], ref["ns"], atol=1e-3)
    assert np.abs(compact["nc"].astype(int) - np.rint(ref["nc"] * 255)).max() <= 1


def test_default_tile_geometry_has_one_home():
    """256/32/192 are stated once, in inference/config.py; everything else (InferConfig, predict_tiled,
    tile mode, validation scoring, the benchmarks) takes them from there."""
    assert (DEFAULT_TILE_SIZE, DEFAULT_MARGIN, DEFAULT_STRIDE) == (256, 32, 192)
    cfg = InferConfig()
    assert (cfg.tile_size, cfg.margin, cfg.effective_stride) == (256, 32, 192)
    for fn in (predict_tiled, tile_predict.segment_image):
        params = inspect.signature(fn).parameters
        assert (params["tile"].default, params["stride"].default) == (256, 192), fn.__name__
    root = Path(__file__).resolve().parents[2]
    geometry = re.compile(  # a storage tile (tifffile's tile=(256, 256)) is another fact
        r"\b192\b|patch_size\s*\+\s*64\b|--margin\b.*default=\d"
        r"|\b(tile|tile_size|stride|margin)\b[\"']?\s*[:=]\s*(int\s*=\s*)?(Field\()?[^,()\n]*\b(256|192|32|64)\b")
    home = Path(inference_config.__file__).resolve()
    found = [f"{p.relative_to(root)}:{i}: {line.strip()}"
             for p in sorted([*(root / "wsi_pipeline").rglob("*.py"), *(root / "benchmarks").glob("*.py")])
             if p.resolve() != home
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if geometry.search(line.split("#")[0])]
    assert found == []
