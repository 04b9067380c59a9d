"""U-Net decoder: each branch upsamples its own (attended) deepest features back to full resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsi_pipeline.model.resnet import conv_bn_relu


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(c_in + c_skip, c_out), conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """Skips from the encoder at strides 16, 8, 4, 2 and the input image itself at stride 1.

    The last skip is the RGB input: nucleus boundaries are one or two pixels wide at 0.25 µm/px,
    and stride-2 features alone blur them.
    """

    def __init__(self, enc_channels: tuple[int, ...], out_channels: int) -> None:
        super().__init__()
        c2, c4, c8, c16, c32 = enc_channels
        d16, d8, d4, d2, d1 = c16, c8, c4, max(c2 // 2, 8), max(c2 // 2, 8)
        self.blocks = nn.ModuleList(
            [
                UpBlock(c32, c16, d16),
                UpBlock(d16, c8, d8),
                UpBlock(d8, c4, d4),
                UpBlock(d4, c2, d2),
                UpBlock(d2, 3, d1),
            ]
        )
        self.head = nn.Conv2d(d1, out_channels, 1)

    def forward(self, deepest: torch.Tensor, feats: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        skips = [feats[3], feats[2], feats[1], feats[0], image]
        x = deepest
        for block, skip in zip(self.blocks, skips, strict=True):
            x = block(x, skip)
        return self.head(x)
