"""The three-branch network of patent CN114627142A (SMILE, Medical Image Analysis 2023)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from wsi_pipeline.model.attention import BRANCHES, MultiTaskCorrelationAttention
from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.model.decoder import UNetDecoder
from wsi_pipeline.model.resnet import ResNetEncoder


class MultiTaskNet(nn.Module):
    """NS (nucleus/background), HV (distance maps) and NC (type) branches.

    Each branch has its own encoder and decoder; only the correlation attention between them
    is shared. Input: (B, 3, H, W) RGB in [0, 1], H and W multiples of 32. Output logits for
    ns/nc and HV maps in [-1, 1], all at full input resolution.
    """

    mean: torch.Tensor  # buffers: ImageNet normalisation constants
    std: torch.Tensor

    def __init__(
        self,
        n_types: int = 5,
        encoder: Literal["resnet34", "resnet18"] = "resnet34",
        width: int = 64,
        cross_task: bool = True,
        attention_reduction: int = 8,
        recurrence: int = 2,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(
            n_types=n_types,
            encoder=encoder,
            width=width,
            cross_task=cross_task,
            attention_reduction=attention_reduction,
            recurrence=recurrence,
        )
        out_channels = {"ns": 2, "hv": 2, "nc": n_types}
        encoders = {b: ResNetEncoder(encoder, width) for b in BRANCHES}
        channels = encoders["ns"].channels
        self.encoders = nn.ModuleDict(encoders)
        self.attention = MultiTaskCorrelationAttention(
            channels[-1], attention_reduction, recurrence, cross_task
        )
        self.decoders = nn.ModuleDict(
            {b: UNetDecoder(channels, out_channels[b]) for b in BRANCHES}
        )
        # ImageNet-style normalisation inside the model, so callers feed plain [0, 1] RGB.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    @classmethod
    def from_config(cls, config: ModelConfig) -> MultiTaskNet:
        return cls(**config.model_dump())

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the weights: fp32, or bf16 in a CPU inference copy (`model.predictors.torch_predictor`),
        which takes the image normalised in fp32 (the normalisation buffers stay fp32)."""
        return next(self.encoders[BRANCHES[0]].parameters()).dtype  # its stem conv

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {tuple(x.shape)}")
        x = ((x - self.mean) / self.std).to(self.compute_dtype)
        feats = {b: self.encoders[b](x) for b in BRANCHES}
        deepest = self.attention({b: feats[b][-1] for b in BRANCHES})
        out = {b: self.decoders[b](deepest[b], feats[b], x) for b in BRANCHES}
        out["hv"] = torch.tanh(out["hv"])
        return out
