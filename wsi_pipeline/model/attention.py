r"""Multi-task correlation attention: recurrent criss-cross attention shared by all branches.

CCNet (Huang et al., 2019) lets every pixel u attend to the H + W - 1 pixels of its own row
and column; two passes with the same weights (recurrence R = 2) connect every pixel to every
other one at O(H·W·(H+W)) cost instead of O((H·W)^2). Patent CN114627142A places ONE such
module between the encoders and decoders of the NS, NI (HV) and NC branches so that each
branch "learns its own task features and the related features of the other branches".

Design (t ∈ {ns, hv, nc}, F_t the branch's deepest features, all weights shared by branches):

    G      = W_g [F_ns ; F_hv ; F_nc]                  (1×1 conv, 3C → C; cross_task=True)
    G_t    = F_t                                        (cross_task=False)
    Q_t    = W_q F_t,   K_t = W_k G,   V_t = W_v G      (1×1 convs; Q, K have C/r channels)
    A_t(u) = softmax over Ω(u) of  Q_t(u) · K_t(v),     Ω(u) = row(u) ∪ column(u), u counted once
    F_t'(u) = γ · Σ_{v∈Ω(u)} A_t(u, v) V_t(v) + F_t(u) (γ learnable, initialised 0)

and the block is applied R times, G being recomputed from the updated features each pass.
Queries come from the branch itself (what this task looks for), keys and values from the
fused features of all tasks (where the evidence lies); with γ = 0 at start the network
begins as three independent U-Nets and learns how much cross-task context to take.
"""

from __future__ import annotations

import torch
from torch import nn

BRANCHES = ("ns", "hv", "nc")


def criss_cross(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Aggregate v over each pixel's row and column, weighted by softmax(q·k).

    q, k: (B, c, H, W); v: (B, C, H, W). Returns (B, C, H, W).
    """
    _, _, h, _w = q.shape
    # Column energies (B, H, W, H'): pixel (h, w) against (h', w); row energies (B, H, W, W').
    e_col = torch.einsum("bchw,bcgw->bhwg", q, k)
    e_row = torch.einsum("bchw,bchg->bhwg", q, k)
    # The pixel itself lies in both its row and its column: count it once (in the row).
    self_mask = torch.eye(h, dtype=torch.bool, device=q.device).view(1, h, 1, h)
    e_col = e_col.masked_fill(self_mask, float("-inf"))
    attn = torch.softmax(torch.cat([e_col, e_row], dim=-1).float(), dim=-1).to(v.dtype)
    a_col, a_row = attn[..., :h], attn[..., h:]
    out = torch.einsum("bhwg,bcgw->bchw", a_col, v)
    return out + torch.einsum("bhwg,bchg->bchw", a_row, v)


class MultiTaskCorrelationAttention(nn.Module):
    """One instance, called once per forward on the features of all three branches together."""

    def __init__(
        self, channels: int, reduction: int = 8, recurrence: int = 2, cross_task: bool = True
    ) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.recurrence = recurrence
        self.cross_task = cross_task
        self.fuse = (
            nn.Sequential(
                nn.Conv2d(len(BRANCHES) * channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            )
            if cross_task
            else None
        )
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _context(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Key/value source per branch, stacked on the batch axis: (3B, C, H, W)."""
        if self.fuse is None:
            return torch.cat([feats[b] for b in BRANCHES], dim=0)
        shared = self.fuse(torch.cat([feats[b] for b in BRANCHES], dim=1))
        return shared.repeat(len(BRANCHES), 1, 1, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for _ in range(self.recurrence):
            x = torch.cat([feats[b] for b in BRANCHES], dim=0)
            context = self._context(feats)
            out = x + self.gamma * criss_cross(self.query(x), self.key(context), self.value(context))
            feats = dict(zip(BRANCHES, out.chunk(len(BRANCHES), dim=0), strict=True))
        return feats
