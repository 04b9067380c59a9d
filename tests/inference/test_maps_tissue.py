"""maps.zarr keeps the tissue mask that chose the tiles, with its pixel size."""

from __future__ import annotations

import numpy as np
import torch
import zarr
from PIL import Image

from wsi_pipeline.inference.config import InferConfig, TissueConfig
from wsi_pipeline.inference.slide import infer_slide
from wsi_pipeline.io.plain_image import PlainImageSlide
from wsi_pipeline.model import MultiTaskNet, load_checkpoint, save_checkpoint

CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")


def test_tissue_mask_is_stored_in_the_maps(tmp_path):
    rgb = np.full((400, 600, 3), 245, np.uint8)
    rgb[100:300, 150:350] = (200, 120, 180)  # one pink island
    path = tmp_path / "slide.png"
    Image.fromarray(rgb).save(path)
    slide = PlainImageSlide(path, 0.5, pixels=rgb)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", MultiTaskNet(encoder="resnet18", width=8),
                    class_names=CLASSES, mpp=1.0)
    cfg = InferConfig(tile_size=128, margin=32, precision="fp32",
                      tissue=TissueConfig(thumb_mpp=4.0, min_object_um2=500, dilate_um=8.0))
    result = infer_slide(slide, tmp_path / "out", cfg, load_checkpoint(tmp_path / "m.pt"),
                         progress=False)
    g = zarr.open_group(str(result.maps), mode="r")
    tissue = g["tissue"]
    assert tissue.dtype == bool and tissue.attrs["tissue_mpp"] == 4.0
    assert tissue.shape == (50, 75)  # 400 x 600 px at 0.5 µm/px seen at 4 µm/px
    mask = tissue[:]
    np.testing.assert_array_equal(mask, np.asarray(Image.open(tmp_path / "out" / "tissue.png")) > 0)
    assert mask[20, 30] and not mask[2, 2] and not mask[45, 70]  # island in, glass out
