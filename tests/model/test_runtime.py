"""model.runtime: device, precision and back end decided once, from the settings and the machine."""

from __future__ import annotations

import logging

import pytest
import torch

from wsi_pipeline.model.runtime import RuntimeUnavailable, choose_runtime, decide_runtime

MACHINES = {  # name -> the facts decide_runtime reads
    "laptop": {"cuda": False, "openvino": False, "cpu_bf16": False},
    "xeon": {"cuda": False, "openvino": True, "cpu_bf16": True},
    "gpu box": {"cuda": True, "openvino": True, "cpu_bf16": False},
}


@pytest.mark.parametrize(("machine", "device", "predictor", "dtype"), [
    ("laptop", "cpu", "torch", None),
    ("xeon", "cpu", "openvino", torch.bfloat16),
    ("gpu box", "cuda", "torch", "cuda-auto"),
])
def test_auto_settings_per_machine(machine, device, predictor, dtype):
    runtime = decide_runtime("auto", "auto", "auto", **MACHINES[machine])
    assert runtime.device.type == device and runtime.predictor == predictor
    if dtype != "cuda-auto":
        assert runtime.float_dtype == dtype
    assert runtime.reasons[0].startswith("device auto")


def test_impossible_settings_are_refused_with_the_reason():
    with pytest.raises(RuntimeUnavailable, match="no CUDA GPU is available"):
        decide_runtime("cuda", **MACHINES["xeon"])
    with pytest.raises(ValueError, match="CPU only"):
        decide_runtime("cuda", "auto", "openvino", **MACHINES["gpu box"])
    with pytest.raises(RuntimeUnavailable, match="OpenVINO is not installed"):
        decide_runtime("cpu", "auto", "openvino", **MACHINES["laptop"])
    with pytest.raises(ValueError, match="openvino back end; here the back end is torch"):
        decide_runtime("cpu", "int8", "torch", **MACHINES["xeon"])


def test_int8_is_its_own_predictor_and_recorded_as_int8():
    runtime = decide_runtime("cpu", "int8", "auto", **MACHINES["xeon"])
    assert runtime.predictor == "openvino-int8" and runtime.backend == "openvino"


def test_the_decision_is_logged_once_with_its_reasons(caplog):
    with caplog.at_level(logging.INFO, logger="wsi_pipeline.model.runtime"):
        choose_runtime("cpu", "fp32", "torch")
        choose_runtime("cpu", "fp32", "torch")
        choose_runtime("cpu", "fp32", "torch")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 1  # logged when the decision is new, never once per slide
    if lines:
        assert "back end torch as configured" in lines[0] and "precision fp32" in lines[0]
