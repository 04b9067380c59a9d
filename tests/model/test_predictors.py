"""model.predictors: every back end behind one interface, chosen by name, all giving the same maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_pipeline.model import MultiTaskNet
from wsi_pipeline.model.predictors import (
    PREDICTORS,
    Predictor,
    bare_model,
    load_predictor,
    predictor_class,
)
from wsi_pipeline.model.runtime import choose_runtime


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return bare_model(MultiTaskNet(encoder="resnet18", width=8).eval())


def test_every_registered_back_end_is_a_predictor():
    for name in PREDICTORS:
        cls = predictor_class(name)
        assert issubclass(cls, Predictor) and cls.name == name
    with pytest.raises(KeyError, match="no network back end .onnx.; there are openvino, openvino-int8"):
        predictor_class("onnx")


def test_torch_and_openvino_predictors_give_the_same_maps(model):
    tiles = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    torch_p = load_predictor(model, choose_runtime("cpu", "fp32", "torch"), reuse=False)
    ov_p = load_predictor(model, choose_runtime("cpu", "fp32", "openvino"), reuse=False)
    assert torch_p.metadata["backend"] == "torch" and ov_p.metadata["backend"] == "openvino"
    want, got = torch_p.predict(tiles), ov_p.predict(tiles)
    for key in ("ns", "hv", "nc"):
        np.testing.assert_allclose(got[key], want[key], atol=2e-3, err_msg=key)
    compact = torch_p.predict_compact(tiles)
    assert compact["nc"].dtype == np.uint8 and compact["ns"].dtype == np.float16


def test_a_predictor_is_prepared_once_per_model_and_runtime(model):
    runtime = choose_runtime("cpu", "fp32", "torch")
    first = load_predictor(model, runtime)
    assert load_predictor(model, runtime) is first
    assert load_predictor(model, choose_runtime("cpu", "bf16", "torch")) is not first
    assert all(p.dtype == torch.float32 for p in model.net.parameters())  # the checkpoint's own is untouched
