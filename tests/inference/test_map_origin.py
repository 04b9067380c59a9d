"""Map <-> level-0 geometry end to end: a nucleus at a known level-0 position is reported there.

An oracle "network" (dark pixels = nucleus, HV targets of the dark blobs) replaces the model,
so the only sources of error are the reader's resampling, infer_slide's `origin`/`scale`
attributes and the post-processing's use of them. A half-pixel slip at either resolution
moves every centroid by >= 0.5 level-0 px at this scale (2).
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch
from scipy import ndimage

from wsi_pipeline.datasets.targets import hv_maps
from wsi_pipeline.inference.config import InferConfig, TissueConfig
from wsi_pipeline.inference.slide import infer_slide
from wsi_pipeline.io.plain_image import PlainImageSlide
from wsi_pipeline.model import MultiTaskNet, load_checkpoint, save_checkpoint
from wsi_pipeline.model.predictors import Predictor
from wsi_pipeline.postproc import PostprocConfig
from wsi_pipeline.postproc.slide import postprocess_slide

SLIDE_MPP, MODEL_MPP = 0.25, 0.5  # 2 level-0 px per map px
CLASSES = ("background", "other", "inflammatory", "epithelial", "spindle")
# Level-0 (x, y) pixel coordinates of the disc centres, off the map grid on purpose.
CENTRES = [(150.3, 170.6), (301.0, 180.0), (222.7, 333.2), (371.5, 300.5)]
RADIUS = 14.0  # level-0 px (3.5 µm)


def _oracle_predict(predictor, batch):
    """maps.zarr storage types from the tile pixels: dark = nucleus, one instance per blob."""
    dark = batch.mean(axis=3) < 128
    inst = np.stack([ndimage.label(d)[0] for d in dark])
    nc = np.zeros((len(batch), len(CLASSES), *dark.shape[1:]), np.uint8)
    nc[:, 0] = np.where(dark, 0, 255)
    nc[:, 1] = np.where(dark, 255, 0)
    return {"ns": dark.astype(np.float16),
            "hv": np.stack([hv_maps(i) for i in inst]).astype(np.float16), "nc": nc}


def test_nucleus_centroids_land_on_their_level0_position(tmp_path, monkeypatch):
    rows, cols = np.indices((512, 512))
    rgb = np.full((512, 512, 3), 245, np.uint8)
    rgb[64:448, 64:448] = (225, 160, 200)  # pink "tissue"
    for x, y in CENTRES:
        rgb[(cols - x) ** 2 + (rows - y) ** 2 <= RADIUS**2] = (70, 30, 110)
    slide = PlainImageSlide(tmp_path / "slide.png", SLIDE_MPP, pixels=rgb)
    (tmp_path / "slide.png").write_bytes(b"")  # provenance stats the file
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"  # never run (the oracle replaces it): provides mpp and classes
    save_checkpoint(ckpt, MultiTaskNet(encoder="resnet18", width=8), class_names=CLASSES,
                    mpp=MODEL_MPP)
    monkeypatch.setattr(Predictor, "predict_compact", _oracle_predict)
    cfg = InferConfig(tile_size=128, margin=32, chunk_size=128, precision="fp32",
                      tissue=TissueConfig(min_object_um2=500))
    result = infer_slide(slide, tmp_path / "out", cfg, load_checkpoint(ckpt), progress=False)
    res = postprocess_slide(result.maps, tmp_path / "nuclei.parquet", PostprocConfig(),
                            progress=False)
    table = pq.read_table(res.out_path).to_pandas()
    assert len(table) == len(CENTRES)
    # The discs as rasterised at level 0 (pixel centres at integers): their true centroids.
    truth = np.array([[cols[(cols - x) ** 2 + (rows - y) ** 2 <= RADIUS**2].mean(),
                       rows[(cols - x) ** 2 + (rows - y) ** 2 <= RADIUS**2].mean()]
                      for x, y in CENTRES])
    got = table[["x", "y"]].to_numpy()
    dist = np.hypot(*(got[:, None, :] - truth[None]).transpose(2, 0, 1)).min(axis=1)
    assert dist.max() < 0.2, dist
