"""The OpenVINO back end computes the network's function, batch by batch, as PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.engine import prepared
from wsi_pipeline.model import MultiTaskNet
from wsi_pipeline.model.openvino_net import OpenVINONet, convert_network
from wsi_pipeline.model.predict import predict_batch, predict_batch_compact
from wsi_pipeline.model.runtime import choose_runtime, decide_runtime

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def net() -> MultiTaskNet:
    torch.manual_seed(0)
    net = MultiTaskNet(encoder="resnet18", width=8).eval()
    with torch.no_grad():
        net.attention.gamma.fill_(0.5)
    return net


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ov(net) -> OpenVINONet:
    return prepared(net, "fp32", "openvino")


def test_fp32_openvino_matches_pytorch(net, ov, tiles):
    want = predict_batch(prepared(net, "fp32", "torch"), tiles, precision="fp32")
    assert isinstance(ov, OpenVINONet) and ov.precision == "f32"
    got = predict_batch(ov, tiles, precision="fp32")
    for key in ("ns", "hv", "nc"):
        np.testing.assert_allclose(got[key], want[key], atol=2e-3, err_msg=key)


def test_a_short_batch_is_padded_not_recompiled_and_each_tile_is_its_own(ov, tiles):
    full = predict_batch_compact(ov, tiles, precision="fp32")
    short = predict_batch_compact(ov, tiles[1:], precision="fp32")  # padded to the compiled 3
    assert ov.compiled_shapes == [(3, 64, 96)]
    for key in ("ns", "hv", "nc"):
        assert short[key].shape[0] == 2
        np.testing.assert_array_equal(short[key], full[key][1:], err_msg=key)


def test_two_streams_split_the_batch_and_give_every_tile_the_same_output(net, ov, tiles):
    one = predict_batch_compact(ov, tiles, precision="fp32")
    two = OpenVINONet(convert_network(net), "f32", threads=2)
    assert two.streams == 2
    got = predict_batch_compact(two, tiles, precision="fp32")  # 3 tiles: sub-batches of 2, 1 padded
    assert two.compiled_shapes == [(2, 64, 96)]
    for key in ("ns", "hv", "nc"):
        np.testing.assert_array_equal(got[key], one[key], err_msg=key)


def test_flip_tta_runs_through_openvino(net, ov, tiles):
    want = predict_batch(prepared(net, "fp32", "torch"), tiles, precision="fp32", tta=True)
    got = predict_batch(ov, tiles, precision="fp32", tta=True)
    np.testing.assert_allclose(got["hv"], want["hv"], atol=2e-3)


def test_backend_choice_and_record():
    def backend(device, backend="auto", openvino=True):
        return decide_runtime(device, "auto", backend, cuda=True, openvino=openvino,
                              cpu_bf16=False).backend

    assert backend("cpu") == "openvino"  # a dependency: installed wherever the package is
    assert backend("cpu", openvino=False) == "torch"
    assert backend("cuda") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        backend("cuda", "openvino")
    record = choose_runtime(CPU, "fp32", "auto").record()
    assert record["backend"] == "openvino" and record["precision"] == "fp32" and record["version"]
    assert choose_runtime(CPU, "bf16", "torch").record() == {
        "backend": "torch", "version": torch.__version__, "device": "cpu", "precision": "bfloat16"}
