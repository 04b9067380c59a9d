"""The OpenVINO back end: the network converted once and compiled for the CPU (`model.openvino_net`)."""

from __future__ import annotations

import torch
from torch import nn

from wsi_pipeline.model.checkpoint import LoadedModel
from wsi_pipeline.model.openvino_net import OpenVINONet, OVPrecision, convert_network
from wsi_pipeline.model.predictors.base import Predictor
from wsi_pipeline.model.runtime import Runtime


def ov_precision(runtime: Runtime) -> OVPrecision:
    """OpenVINO's inference precision hint for the runtime's float layers."""
    dtype = runtime.float_dtype
    return "f32" if dtype is None else "bf16" if dtype == torch.bfloat16 else "f16"


class OpenVINOPredictor(Predictor):
    """The float network run by OpenVINO on the CPU, on the engine's torch thread count."""

    name = "openvino"

    @classmethod
    def prepare(cls, model: LoadedModel, runtime: Runtime) -> nn.Module:
        return OpenVINONet(convert_network(model.net), ov_precision(runtime), torch.get_num_threads())
