"""Network hyper-parameters: everything needed to rebuild a `MultiTaskNet` from a checkpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    """Architecture of the three-branch network.

    `width` scales every channel count (64 = the ResNet paper); compact CPU models use 16–32.
    """

    model_config = ConfigDict(extra="forbid")

    n_types: int = Field(5, ge=2, description="NC classes including background (class 0).")
    encoder: Literal["resnet34", "resnet18"] = "resnet34"
    width: int = Field(64, ge=4, description="Channels of the first ResNet stage.")
    cross_task: bool = Field(
        True, description="Attention keys/values from all branches (True) or the branch itself."
    )
    attention_reduction: int = Field(8, ge=1, description="Query/key channel reduction factor.")
    recurrence: int = Field(2, ge=1, description="Criss-cross passes with shared weights (CCNet R).")
