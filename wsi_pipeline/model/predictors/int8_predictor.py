"""The int8 back end: the checkpoint's quantised network (`wsi-pipeline quantize-model`) on OpenVINO.

The int8 file lies beside its checkpoint and is stamped with its sha256 (`model.quantize`);
one made from other weights is refused by name.
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_pipeline.model.checkpoint import LoadedModel
from wsi_pipeline.model.openvino_net import OpenVINONet
from wsi_pipeline.model.predictors.base import Predictor
from wsi_pipeline.model.predictors.openvino_predictor import ov_precision
from wsi_pipeline.model.quantize import int8_model_path, load_int8_model
from wsi_pipeline.model.runtime import Runtime


class Int8Predictor(Predictor):
    """The int8 network of `model`'s checkpoint, its float layers at the runtime's precision."""

    name = "openvino-int8"

    @classmethod
    def prepare(cls, model: LoadedModel, runtime: Runtime) -> nn.Module:
        int8 = load_int8_model(int8_model_path(model.path), model.sha256)
        return OpenVINONet(int8, ov_precision(runtime), torch.get_num_threads())
