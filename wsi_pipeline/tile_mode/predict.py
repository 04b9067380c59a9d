"""Tile mode: one plain image in, HoVer-Net style instance outputs out.

Images of any size go through `inference.image.predict_tiled`. An image whose pixel size differs from
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

from wsi_pipeline import __version__
from wsi_pipeline.atomic import atomic_path
from wsi_pipeline.evaluation.matio import write_instance_mat
from wsi_pipeline.export.geojson import hex_to_rgb, write_feature_collection
from wsi_pipeline.inference.config import DEFAULT_STRIDE, DEFAULT_TILE_SIZE
from wsi_pipeline.inference.image import predict_tiled
from wsi_pipeline.model import LoadedModel
from wsi_pipeline.model.predictors import Predictor
from wsi_pipeline.postproc import PostprocConfig, SegmentationResult, segment_instances
from wsi_pipeline.postproc.measure import nucleus_table
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


def write_mat(path: Path, result: SegmentationResult, model: LoadedModel, mpp: float) -> Path:
    """HoVer-Net .mat with per-instance type probabilities and provenance."""
    return write_instance_mat(
        path, result.inst_map, result.types,
        inst_type_prob=result.type_probs,
        inst_uid=np.arange(1, result.n + 1),
        extra={"model_sha256": model.sha256, "wsi_pipeline_version": __version__, "mpp": mpp,
               "class_names": np.array(model.class_names, dtype=object)},
    )


def write_overlay(path: Path, image: np.ndarray, result: SegmentationResult,
                  class_colors: tuple[str, ...]) -> None:
    """The image with every nucleus contour drawn in its type's colour."""
    lut = np.zeros((result.n + 1, 3), np.uint8)
    palette = np.array([hex_to_rgb(c) for c in class_colors], np.uint8)
    lut[1:] = palette[np.clip(result.types, 0, len(palette) - 1)]
    edges = find_boundaries(result.inst_map, mode="inner")
    out = image.copy()
    out[edges] = lut[result.inst_map[edges]]
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format="PNG")


def write_tile_geojson(path: Path, result: SegmentationResult, model: LoadedModel, mpp: float) -> None:
    """QuPath detections (image pixel coordinates) with class name, colour and measurements:
    the rows the slide's nuclei.parquet would hold for these nuclei (`measure.nucleus_table`,
    ids 1..N, outlines as traced), written by the same feature builder as the slide export."""
    table = nucleus_table(result.inst_map, result.types, result.type_probs,
                          class_names=model.class_names, mpp=mpp)
    # The image's name stands in for a slide id in each nucleus's UUID (the Feature `id`).
    image_id = path.name.removesuffix(".gz").removesuffix(".geojson")
    write_feature_collection(path, table.to_batches(), model.class_names, model.class_colors,
                             slide_id=image_id)
