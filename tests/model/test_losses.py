"""Loss functions, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsi_pipeline.model.losses import cost_matrix_from_counts, cost_sensitive_ce, msge


def test_equals_plain_ce_when_lambda_zero():
    torch.manual_seed(0)
    logits, target = torch.randn(10, 4), torch.randint(0, 4, (10,))
    w = torch.rand(4, 4).fill_diagonal_(0)
    assert torch.equal(cost_sensitive_ce(logits, target, w, 0.0), F.cross_entropy(logits, target))


def test_hand_computed_example():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(2.0), 0.0]])  # softmax [.25,.75], [2/3,1/3]
    target = torch.tensor([0, 1])
    w = torch.tensor([[0.0, 2.0], [0.5, 0.0]])
    ce = -(math.log(0.25) + math.log(1 / 3)) / 2
    penalty = (0.75 * 2.0 + (2 / 3) * 0.5) / 2
    got = cost_sensitive_ce(logits, target, w, lam=0.2)
    assert float(got) == pytest.approx(ce + 0.2 * penalty, abs=1e-6)


def test_penalty_zero_when_all_mass_on_true_class():
    target = torch.tensor([0, 2, 1])
    logits = F.one_hot(target, 3).float() * 100.0
    w = torch.ones(3, 3).fill_diagonal_(0)
    ce = F.cross_entropy(logits, target)
    assert float(cost_sensitive_ce(logits, target, w, 5.0) - ce) == pytest.approx(0.0, abs=1e-12)


def test_dense_maps_match_flattened():
    torch.manual_seed(1)
    logits, target = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    w = torch.rand(3, 3).fill_diagonal_(0)
    flat_logits = logits.movedim(1, -1).reshape(-1, 3)
    assert torch.allclose(
        cost_sensitive_ce(logits, target, w, 0.3),
        cost_sensitive_ce(flat_logits, target.reshape(-1), w, 0.3),
        atol=1e-6,
    )


def test_cost_matrix_rare_classes_cost_more():
    w = cost_matrix_from_counts([10000, 100, 400])
    assert np.all(np.diag(w) == 0)
    assert w[1, 0] == pytest.approx(1.0)  # rarest class: the largest cost
    assert w[2, 0] == pytest.approx(0.5)  # 4x more frequent -> sqrt(4) = 2x cheaper
    assert w[0, 1] == pytest.approx(0.1)
    assert np.all(w[1, [0, 2]] == w[1, 0])


def test_cost_matrix_rejects_bad_counts():
    with pytest.raises(ValueError):
        cost_matrix_from_counts([0, 0])
    with pytest.raises(ValueError):
        cost_matrix_from_counts([5])


def test_msge_zero_for_perfect_and_positive_otherwise():
    hv = torch.rand(1, 2, 16, 16) * 2 - 1
    mask = torch.ones(1, 16, 16, dtype=torch.long)
    assert float(msge(hv, hv, mask)) == 0.0
    assert float(msge(hv, torch.zeros_like(hv), mask)) > 0


def test_untyped_pixels_leave_the_nc_loss_untouched() -> None:
    """A mixed batch: image 0 typed, image 1 from an instance-only dataset. The NC terms must
    not see image 1 at all — if its pixels were taught as background (or as any class), its
    logits would change the loss and receive a gradient."""
    import numpy as np

    from wsi_pipeline.datasets.dataset import NucleusDataset
    from wsi_pipeline.datasets.sample import Sample
    from wsi_pipeline.model.losses import IGNORE, cost_sensitive_ce, soft_dice

    inst = np.zeros((16, 16), np.int32)
    inst[4:10, 4:10] = 1
    image = np.full((16, 16, 3), 200, np.uint8)
    names = ("background", "a", "b")
    typed = Sample("t", image, inst, inst * 2, names, 0.25)
    untyped = Sample("u", image, inst, None, ("background", "nucleus"), 0.25)
    ds = NucleusDataset([typed, untyped], ignore_untyped_nc=True)
    target = torch.stack([ds[0]["nc"], ds[1]["nc"]])
    assert (target[1] == IGNORE).all() and (target[0] >= 0).all()
    cm = torch.tensor([[0, 0.1, 0.1], [1.0, 0, 1.0], [0.5, 0.5, 0]])
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = cost_sensitive_ce(logits, target, cm, lam=0.5) + soft_dice(logits, target)
    loss.backward()
    assert logits.grad[1].abs().max() == 0
    assert logits.grad[0].abs().max() > 0
    changed = logits.detach().clone()
    changed[1] = torch.randn(3, 16, 16) * 10
    again = cost_sensitive_ce(changed, target, cm, lam=0.5) + soft_dice(changed, target)
    assert torch.allclose(loss.detach(), again)
    only_typed = cost_sensitive_ce(logits[:1], target[:1], cm, 0.5) + soft_dice(logits[:1], target[:1])
    assert torch.allclose(loss.detach(), only_typed.detach())
    # a batch with no typed pixel at all: exactly 0, not NaN
    none = cost_sensitive_ce(logits[1:], target[1:], cm, 0.5) + soft_dice(logits[1:], target[1:])
    assert float(none.detach()) == 0.0
    # without the flag an untyped sample is one "nucleus" class (single-dataset instance training)
    assert torch.equal(NucleusDataset([untyped])[0]["nc"], torch.from_numpy((inst > 0).astype(np.int64)))


def test_masked_terms_equal_the_plain_ones_without_ignored_pixels_and_zero_with_only_those():
    from wsi_pipeline.model.losses import IGNORE, masked_ce, masked_mse

    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    assert torch.allclose(masked_ce(logits, target), F.cross_entropy(logits, target))
    assert float(masked_ce(logits, torch.full_like(target, IGNORE))) == 0.0
    pred, true = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    assert torch.allclose(masked_mse(pred, true, target >= 0), F.mse_loss(pred, true))
    assert float(masked_mse(pred, true, target < 0)) == 0.0
