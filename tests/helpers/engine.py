"""A network prepared the way the engine prepares a checkpoint's (`model.predictors`)."""

from __future__ import annotations

from torch import nn

from wsi_pipeline.model import LoadedModel, MultiTaskNet
from wsi_pipeline.model.predict import Precision
from wsi_pipeline.model.predictors import bare_model, load_predictor
from wsi_pipeline.model.runtime import NetworkBackend, choose_runtime


def prepared(net: MultiTaskNet | LoadedModel, precision: Precision = "auto",
             backend: NetworkBackend = "torch") -> nn.Module:
    """The engine's inference copy of `net` on the CPU (a fresh one, not the process's cached)."""
    model = net if isinstance(net, LoadedModel) else bare_model(net)
    return load_predictor(model, choose_runtime("cpu", precision, backend), reuse=False).net
