"""Tile mode: one plain image in, the network's maps and the instances out (`Model.segment` of
the Python API and `predict-tiles` run these; the files come from `export.formats`).

Images of any size go through `inference.image.predict_tiled`, on a predictor's prepared
network (`model.predictors`). An image whose pixel size differs from
the model's is resampled to the model's for the network only; the maps are resampled back,
so instances, centroids and overlays are in the input image's own pixels. A model trained with
stain normalisation gets each image normalised with that image's own statistics (tile-mode
images are independent fields of view; slides use one estimate per slide, see `infer`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.segmentation import find_boundaries

from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.export.geojson import hex_to_rgb
from wsi_pipeline.inference.config import DEFAULT_STRIDE, DEFAULT_TILE_SIZE
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.model import LoadedModel
from wsi_pipeline.model.predictors import Predictor
from wsi_pipeline.postproc import PostprocConfig, SegmentationResult, segment_instances
from wsi_pipeline.resample import resize_rgb, scaled_size
from wsi_pipeline.stain import normalizer_from_meta

log = logging.getLogger(__name__)


def segment_image(
    predictor: Predictor,
    image: np.ndarray,
    *,
    image_mpp: float | None = None,
    tile: int = DEFAULT_TILE_SIZE,
    stride: int = DEFAULT_STRIDE,
    batch_size: int = 8,
    postproc: PostprocConfig | None = None,
    two_step: bool = True,
    tta: bool = False,
    name: str = "image",
) -> SegmentationResult:
    """Instances of an RGB uint8 image, by `predictor`'s network (`model.predictors`).

    `image_mpp` None means "already at the model's mpp"; `tile`/`stride`: the tile grid at the
    model's mpp (`predict-tiles` passes a run config's `infer.tile_size` and
    `infer.effective_stride`); `postproc`: the watershed's settings (None = the defaults);
    `tta`: flip test-time augmentation (4x the network time); `name` identifies the image in
    log messages."""
    maps = predict_maps(predictor, image, image_mpp=image_mpp, tile=tile, stride=stride,
                        batch_size=batch_size, tta=tta, name=name)
    return instances_from_maps(predictor, maps, image_mpp, postproc, two_step)


def predict_maps(
    predictor: Predictor,
    image: np.ndarray,
    *,
    image_mpp: float | None = None,
    tile: int = DEFAULT_TILE_SIZE,
    stride: int = DEFAULT_STRIDE,
    batch_size: int = 8,
    tta: bool = False,
    name: str = "image",
) -> dict[str, np.ndarray]:
    """The network's maps of an RGB uint8 image, in the image's own pixels: {"ns": (H, W)
    nucleus probability, "hv": (2, H, W), "nc": (C, H, W) type softmax}, float32; parameters
    as `segment_image`."""
    model = predictor.model
    mpp = float(model.mpp) if image_mpp is None else float(image_mpp)
    h, w = image.shape[:2]
    factor = mpp / float(model.mpp)  # > 1: the image is coarser than the model wants
    net_input = image
    if abs(factor - 1) > 1e-3:  # the engine's resampling, as for slide tiles
        net_input = resize_rgb(image, scaled_size((h, w), factor))
    maps = predict_tiled(predictor.net, _normalize_stain(model, net_input, name), tile=tile,
                         stride=stride, batch_size=batch_size, device=predictor.runtime.device,
                         precision=predictor.runtime.precision, tta=tta)
    if net_input is not image:
        maps = {k: _resize_maps(v, (h, w)) for k, v in maps.items()}
    return maps


def instances_from_maps(predictor: Predictor, maps: dict[str, np.ndarray], image_mpp: float | None,
                        postproc: PostprocConfig | None = None, two_step: bool = True
                        ) -> SegmentationResult:
    """The instances of `predict_maps`'s maps (the post-processing at the image's mpp)."""
    mpp = float(predictor.model.mpp) if image_mpp is None else float(image_mpp)
    return segment_instances(maps["ns"], maps["hv"], maps["nc"], mpp=mpp, config=postproc,
                             two_step=two_step)


def _normalize_stain(model: LoadedModel, image: np.ndarray, name: str) -> np.ndarray:
    """`image` mapped onto the stain target the model was trained with (as the network input,
    at the model's mpp, like the training images); unchanged for models trained without one, or,
    with a warning, where the image shows too little tissue to estimate its stain."""
    normalizer = normalizer_from_meta(model.meta.get("stain"))
    if normalizer is None:
        return image
    stats = normalizer.source_stats(image)
    if stats is None:
        log.warning("%s: too little tissue to estimate its stain; not stain-normalised", name)
        return image
    log.debug("%s: stain normalisation %s, source %s", name, model.meta["stain"]["method"],
              stats.to_meta())
    return normalizer.apply(image, stats)


def _resize_maps(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(arr)
    t = t[None, None] if t.ndim == 2 else t[None]
    out = F.interpolate(t, size=hw, mode="bilinear", align_corners=False)[0]
    return (out[0] if arr.ndim == 2 else out).numpy()


def write_overlay(path: Path, image: np.ndarray, labels: np.ndarray, types: np.ndarray,
                  class_colors: tuple[str, ...]) -> None:
    """The image with every nucleus contour drawn in its type's colour (`labels`: the instance
    map, ids 1..N; `types`: the N nuclei's type ids)."""
    types = np.asarray(types)
    lut = np.zeros((types.size + 1, 3), np.uint8)
    palette = np.array([hex_to_rgb(c) for c in class_colors], np.uint8)
    lut[1:] = palette[np.clip(types, 0, len(palette) - 1)]
    edges = find_boundaries(labels, mode="inner")
    out = image.copy()
    out[edges] = lut[labels[edges]]
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format="PNG")
