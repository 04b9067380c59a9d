"""BatchNorm folding and the PyTorch back end's inference copy (`model.predictors.torch_predictor`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.engine import prepared
from wsi_pipeline.model import MultiTaskNet
from wsi_pipeline.model.fold import fold_batchnorm
from wsi_pipeline.model.predict import predict_batch


def _trained_like(seed: int = 0) -> MultiTaskNet:
    """A small network whose BatchNorms carry non-trivial statistics and affine parameters,
    as a trained one does (fresh BNs are identities and would hide a wrong fold)."""
    torch.manual_seed(seed)
    net = MultiTaskNet(encoder="resnet18", width=8)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    with torch.no_grad():
        net.attention.gamma.fill_(0.5)  # attention on, so its fused conv/BN matters
    return net.eval()


def test_folded_network_computes_the_same_function():
    net = _trained_like()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 64, 96)
    with torch.inference_mode():
        want, got = net(x), folded(x)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=2e-4, rtol=1e-4)


def test_unknown_batchnorm_placement_is_an_error():
    net = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="no conv to fold into"):
        fold_batchnorm(net)


def test_preparing_leaves_the_training_network_alone():
    net = _trained_like().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    copy = prepared(net, "bf16")
    assert net.training and any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert not copy.training
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert copy.mean.dtype == torch.float32  # the normalisation stays fp32


def test_bf16_inference_copy_matches_fp32_within_bf16_rounding():
    net = _trained_like()
    tiles = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    want = predict_batch(prepared(net, "fp32"), tiles, precision="fp32")
    got = predict_batch(prepared(net, "bf16"), tiles, precision="bf16")
    for key in ("ns", "hv", "nc"):
        assert np.abs(got[key] - want[key]).mean() < 0.01, key
        assert np.abs(got[key] - want[key]).max() < 0.15, key
