"""The network's structure: shapes, encoder layout, parameter sharing, gradient flow."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.model import MultiTaskNet
from wsi_pipeline.model.attention import criss_cross
from wsi_pipeline.model.losses import multitask_loss
from wsi_pipeline.training.config import LossConfig


@pytest.fixture(scope="module")
def small_net() -> MultiTaskNet:
    torch.manual_seed(0)
    return MultiTaskNet(n_types=4, encoder="resnet18", width=8)


@pytest.mark.parametrize("hw", [(256, 256), (64, 96), (160, 128)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_output_shapes(small_net, hw, mode):
    getattr(small_net, mode)()
    out = small_net(torch.rand(2, 3, *hw))
    assert out["ns"].shape == (2, 2, *hw)
    assert out["hv"].shape == (2, 2, *hw)
    assert out["nc"].shape == (2, 4, *hw)
    assert out["hv"].abs().max() <= 1.0


def test_rejects_sizes_not_multiple_of_32(small_net):
    with pytest.raises(ValueError, match="multiples of 32"):
        small_net(torch.rand(1, 3, 100, 128))


def test_default_encoders_are_resnet34_and_independent():
    net = MultiTaskNet()
    assert set(net.encoders) == set(net.decoders) == {"ns", "hv", "nc"}
    for enc in net.encoders.values():
        assert [len(stage) for stage in enc.stages] == [3, 4, 6, 3]
        n_params = sum(p.numel() for p in enc.parameters())
        assert n_params == pytest.approx(21.3e6, rel=0.01)
    ptrs = [{p.data_ptr() for p in enc.parameters()} for enc in net.encoders.values()]
    assert not (ptrs[0] & ptrs[1]) and not (ptrs[0] & ptrs[2]) and not (ptrs[1] & ptrs[2])


def test_attention_is_one_shared_module(small_net):
    attention_params = {id(p) for p in small_net.attention.parameters()}
    assert attention_params
    for name in ("ns", "hv", "nc"):
        branch = {id(p) for p in small_net.encoders[name].parameters()}
        branch |= {id(p) for p in small_net.decoders[name].parameters()}
        assert not branch & attention_params


@pytest.mark.parametrize("branch", ["ns", "hv", "nc"])
def test_each_branch_loss_reaches_attention(branch):
    torch.manual_seed(0)
    net = MultiTaskNet(n_types=3, encoder="resnet18", width=8).train()
    # gamma starts at 0, which would block gradients to q/k/v on the first step; open it.
    with torch.no_grad():
        net.attention.gamma.fill_(0.5)
    out = net(torch.rand(2, 3, 64, 64))
    out[branch].pow(2).mean().backward()
    for name, p in net.attention.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_total_loss_reaches_all_encoders():
    torch.manual_seed(0)
    net = MultiTaskNet(n_types=3, encoder="resnet18", width=8).train()
    x = torch.rand(2, 3, 64, 64)
    batch = {
        "ns": torch.randint(0, 2, (2, 64, 64)),
        "hv": torch.rand(2, 2, 64, 64) * 2 - 1,
        "nc": torch.randint(0, 3, (2, 64, 64)),
    }
    total, terms = multitask_loss(net(x), batch, torch.ones(3, 3) - torch.eye(3), LossConfig())
    total.backward()
    assert set(terms) == {"ns_ce", "ns_dice", "hv_mse", "hv_msge", "nc_ce", "nc_dice"}
    for name, enc in net.encoders.items():
        grads = [p.grad.abs().sum() for p in enc.parameters() if p.grad is not None]
        assert grads and sum(grads) > 0, name


def test_cross_task_switch_changes_context_source():
    torch.manual_seed(0)
    with_x = MultiTaskNet(n_types=3, encoder="resnet18", width=8, cross_task=True)
    without = MultiTaskNet(n_types=3, encoder="resnet18", width=8, cross_task=False)
    assert with_x.attention.fuse is not None and without.attention.fuse is None
    # With cross-task exchange, perturbing the NC branch's features changes the NS output.
    att = with_x.attention.eval()
    with torch.no_grad():
        att.gamma.fill_(1.0)
        feats = {b: torch.rand(1, 64, 4, 4) for b in ("ns", "hv", "nc")}
        base = att(dict(feats))["ns"]
        feats["nc"] = feats["nc"] + 1.0
        assert not torch.allclose(att(feats)["ns"], base)


def test_criss_cross_matches_explicit_row_column_softmax():
    torch.manual_seed(0)
    q, k, v = torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4), torch.rand(1, 5, 3, 4)
    out = criss_cross(q, k, v)
    h, w = 1, 2
    cells = [(h, j) for j in range(4)] + [(i, w) for i in range(3) if i != h]
    energies = torch.stack([(q[0, :, h, w] * k[0, :, i, j]).sum() for i, j in cells])
    weights = torch.softmax(energies, 0)
    expected = sum(wt * v[0, :, i, j] for wt, (i, j) in zip(weights, cells, strict=True))
    assert torch.allclose(out[0, :, h, w], expected, atol=1e-6)
