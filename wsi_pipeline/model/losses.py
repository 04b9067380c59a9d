r"""Training losses of the three branches.

NS: cross-entropy + soft Dice. HV: MSE + MSGE (HoVer-Net: mean squared error of the Sobel
gradients, inside nuclei only, where the sharp sign flips between touching nuclei live).
NC: cost-sensitive cross-entropy + soft Dice, where the cost-sensitive term is the expected
misclassification cost under a penalty matrix W (patent CN114627142A):

    L_cs = CE + λ · mean_i Σ_k softmax(ŷ_i)_k · W[y_i, k]

W has a zero diagonal, so all probability on the true class costs nothing; a rare true class
gets a larger row of W, so putting its probability on another class costs more.

Partial labels: NC target pixels equal to `IGNORE` (images of datasets without types, and
every unlabelled pixel of a point-labelled image) take no part in any NC term — they are not
taught as background, and a batch of only such pixels gives an NC loss of exactly 0. NS target
pixels equal to `IGNORE` (point-labelled images) take no part in the NS terms nor in either HV
term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from wsi_pipeline.training.config import LossConfig

IGNORE = -100  # NC target of pixels without a type label (torch's default ignore_index)


def cost_sensitive_ce(
    logits: torch.Tensor, target: torch.Tensor, cost_matrix: torch.Tensor, lam: float
) -> torch.Tensor:
    """CE plus λ × expected misclassification cost, both averaged over labelled pixels.

    logits: (N, C) or (B, C, H, W); target: (N,) or (B, H, W) class ids or `IGNORE`;
    cost_matrix: (C, C), row = true class, column = predicted class.
    """
    valid = target != IGNORE
    n_valid = valid.sum()
    if n_valid == 0:
        return logits.sum() * 0.0  # keeps the graph; CE over no pixel would be NaN
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    if lam == 0:
        return ce
    prob = torch.softmax(logits.float(), dim=1)
    cost = cost_matrix.to(prob)[target.clamp(min=0)]  # (N, C) or (B, H, W, C)
    if prob.dim() > 2:
        cost = cost.movedim(-1, 1)
    penalty = ((prob * cost).sum(dim=1) * valid).sum() / n_valid
    return ce + lam * penalty


def cost_matrix_from_counts(counts: np.ndarray | list[float], power: float = 0.5) -> np.ndarray:
    r"""Penalty matrix from class sample counts (pixels or instances).

    w_c = (n_max / n_c)^p, normalised so max_c w_c = 1; W[i, j] = w_i for i ≠ j, W[i, i] = 0.
    With p = 0.5 a class 100× rarer than the most frequent costs 10× more to misclassify.
    Classes with no samples get the largest cost (they cannot be learned from this set,
    but predicting away from them should not be encouraged either).
    """
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size < 2:
        raise ValueError(f"need one count per class (>= 2 classes), got {n.shape}")
    if np.any(n < 0):
        raise ValueError("class counts must be non-negative")
    n_max = n.max()
    if n_max == 0:
        raise ValueError("all class counts are zero")
    safe = np.where(n > 0, n, n[n > 0].min())
    w = (n_max / safe) ** power
    w /= w.max()
    matrix = np.repeat(w[:, None], n.size, axis=1)
    np.fill_diagonal(matrix, 0.0)
    return matrix


def soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """1 - mean Dice over the non-background classes, from softmax probabilities; `IGNORE`
    pixels count on neither side."""
    n_classes = logits.shape[1]
    valid = (target != IGNORE).unsqueeze(1).float()
    if not valid.any():
        return logits.sum() * 0.0
    prob = torch.softmax(logits.float(), dim=1)[:, 1:] * valid
    onehot = F.one_hot(target.clamp(min=0), n_classes).movedim(-1, 1).float()[:, 1:] * valid
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def _sobel_kernels(size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """HoVer-Net's normalised Sobel kernels (d/dx, d/dy)."""
    r = torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float32)
    h, v = torch.meshgrid(r, r, indexing="xy")  # h varies along x (columns), v along y (rows)
    denom = h * h + v * v
    denom[size // 2, size // 2] = 1.0
    return h / denom, v / denom


def hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """d(H)/dx and d(V)/dy of a (B, 2, H, W) HV map, same shape."""
    kx, ky = _sobel_kernels()
    weight = torch.stack([kx, ky]).unsqueeze(1).to(hv)
    return F.conv2d(hv, weight, padding=2, groups=2)


def msge(pred_hv: torch.Tensor, true_hv: torch.Tensor, nucleus: torch.Tensor) -> torch.Tensor:
    """Mean squared gradient error of the HV maps inside nuclei (HoVer-Net)."""
    mask = nucleus.unsqueeze(1).to(pred_hv).expand_as(pred_hv)
    diff = (hv_gradients(pred_hv.float()) - hv_gradients(true_hv.float())) ** 2
    return (diff * mask).sum() / (mask.sum() + 1e-8)


def masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the pixels whose target is not `IGNORE`; exactly 0 (in the graph)
    when every pixel is ignored, where plain CE would be NaN."""
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


def masked_mse(pred: torch.Tensor, true: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, C, H, W) maps over the (B, H, W) `valid` pixels; every pixel
    valid gives F.mse_loss's mean."""
    mask = valid.unsqueeze(1).to(pred).expand_as(pred)
    if not valid.any():
        return pred.sum() * 0.0
    return (((pred - true) ** 2) * mask).sum() / mask.sum()


def multitask_loss(
    out: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    cost_matrix: torch.Tensor,
    cfg: LossConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and every term (for logging)."""
    ns, nc = batch["ns"], batch["nc"]
    terms = {
        "ns_ce": masked_ce(out["ns"].float(), ns),
        "ns_dice": soft_dice(out["ns"], ns),
        "hv_mse": masked_mse(out["hv"].float(), batch["hv"], ns != IGNORE),
        "hv_msge": msge(out["hv"], batch["hv"], ns == 1),
        "nc_ce": cost_sensitive_ce(out["nc"].float(), nc, cost_matrix, cfg.lam),
        "nc_dice": soft_dice(out["nc"], nc),
    }
    total = sum(getattr(cfg, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
