"""ResNet encoders in plain torch.

torchvision does not install beside the CPU torch used here and no pretrained weights can be
downloaded, so the encoder is written out; the stage layout follows He et al. (2016).
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """Stem + four stages; returns the features at strides 2, 4, 8, 16 and 32 for the U-Net skips."""

    def __init__(self, name: str = "resnet34", width: int = 64) -> None:
        super().__init__()
        blocks = STAGE_BLOCKS[name]
        self.channels = (width, width, 2 * width, 4 * width, 8 * width)
        self.stem = conv_bn_relu(3, width, kernel=7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        c_in = width
        for i, n_blocks in enumerate(blocks):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(c_in, c_out, stride)]
            layers += [BasicBlock(c_out, c_out) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: every block starts as identity,
        # which trains markedly better from scratch (Goyal et al., 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.stem(x)
        feats = [s2]
        y = self.pool(s2)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        return feats
