"""Int8 weights and activations for OpenVINO (`infer.precision: int8`): about 2× the bf16 network.

Post-training quantisation (NNCF, OpenVINO's own tool) measures each activation's range on
calibration crops of training images and stores the network with int8 convolutions, which
AMX-INT8 / AVX-512-VNNI / AVX2-VNNI CPUs run at twice the bf16 rate or more. It is done once per
checkpoint, offline (minutes, and it needs annotated-set images the engine does not have), so
the quantised network is a file beside its checkpoint: `<checkpoint stem>.int8.xml` (+ `.bin`),
stamped with the checkpoint's sha256 so that it can never run in place of other weights.

    wsi-pipeline quantize-model CHECKPOINT --config configs/train_mix_stage4.yaml

NNCF is needed only to quantise (`pip install wsi-pipeline[int8]`); running an int8 file needs
OpenVINO alone. Validation figures of int8 against bf16: MODEL_CARD.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from wsi_pipeline.model.openvino_net import convert_network

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.xml"
#: where in the model's runtime info the checkpoint's sha256 is stamped
_SHA_KEY = ["wsi_pipeline", "checkpoint_sha256"]


class Int8ModelError(RuntimeError):
    """No usable int8 network for a checkpoint: missing, unreadable or made from other weights."""


def int8_model_path(checkpoint: Path) -> Path:
    """The int8 network of `checkpoint`: beside it, its stem + `.int8.xml`."""
    return checkpoint.with_name(checkpoint.stem + INT8_SUFFIX)


def calibration_crops(images: Sequence[np.ndarray], count: int, size: int, seed: int) -> list[np.ndarray]:
    """`count` random `size`² uint8 crops drawn evenly over `images` (each at least `size`²), in
    a seeded order: what the network sees in the engine, tile by tile."""
    usable = [im for im in images if im.shape[0] >= size and im.shape[1] >= size]
    if not usable:
        raise ValueError(f"no calibration image is at least {size}x{size} px")
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(count):
        image = usable[k % len(usable)]
        y = int(rng.integers(0, image.shape[0] - size + 1))
        x = int(rng.integers(0, image.shape[1] - size + 1))
        crops.append(np.ascontiguousarray(image[y:y + size, x:x + size, :3]))
    order = rng.permutation(len(crops))
    return [crops[i] for i in order]


def quantize_network(net: nn.Module, crops: Sequence[np.ndarray], checkpoint_sha256: str) -> Any:
    """`net` as an int8 `openvino.Model`, calibrated on `crops` (uint8 RGB), stamped with the
    sha256 of the checkpoint it comes from."""
    import nncf

    model = convert_network(net)
    t0 = time.perf_counter()
    dataset = nncf.Dataset(list(crops), lambda c: np.asarray(c, np.float32).transpose(2, 0, 1)[None] / 255.0)
    # MIXED: symmetric weights, asymmetric activations (the ReLU-free heads have signed outputs)
    quantized = nncf.quantize(model, dataset, subset_size=len(crops), preset=nncf.QuantizationPreset.MIXED)
    quantized.set_rt_info(checkpoint_sha256, _SHA_KEY)
    log.info("int8 quantisation on %d crops in %.0f s", len(crops), time.perf_counter() - t0)
    return quantized


def save_int8_model(model: Any, path: Path) -> None:
    """Write `model` as `path` (.xml) and its weights (.bin); the .xml appears last and whole,
    so a reader never finds an .xml without its weights."""
    import openvino as ov

    if path.suffix != ".xml":
        raise ValueError(f"{path}: an OpenVINO model file must end in .xml")
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    ov.save_model(model, tmp, compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)


def load_int8_model(path: Path, checkpoint_sha256: str) -> Any:
    """The int8 `openvino.Model` in `path`, checked to come from the checkpoint with this sha256."""
    import openvino as ov

    hint = f"make it with `wsi-pipeline quantize-model CHECKPOINT --config TRAIN_CONFIG` (writes {path.name})"
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise Int8ModelError(f"{path}: no int8 network for this checkpoint; {hint}")
    try:
        model = ov.Core().read_model(path)
    except RuntimeError as exc:
        raise Int8ModelError(f"{path}: not a readable OpenVINO model ({exc}); {hint}") from exc
    stamped = model.get_rt_info(_SHA_KEY).astype(str) if model.has_rt_info(_SHA_KEY) else "none"
    if stamped != checkpoint_sha256:
        raise Int8ModelError(f"{path}: quantised from checkpoint sha256 {stamped[:12]}, not from the "
                             f"checkpoint in use ({checkpoint_sha256[:12]}); {hint}")
    model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, -1, -1])})
    return model
