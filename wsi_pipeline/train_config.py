"""Configuration of a training run (configs/train_*.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wsi_pipeline.data.augment import AugmentConfig
from wsi_pipeline.data.mix import DatasetSpec
from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.model.losses import LossConfig
from wsi_pipeline.stain import StainNormConfig


class DataConfig(BaseModel):
    """Training data: one dataset (`format`, `root`, `val_fraction`, `split_seed`), or a mix
    (`datasets`, which then replaces those four)."""

    model_config = ConfigDict(extra="forbid")

    datasets: list[DatasetSpec] = Field(
        default_factory=list,
        description="Mix of datasets, each with its reader, sampling weight and held-out groups. "
        "Untyped datasets train NS and HV only (ignored by the NC losses).",
    )
    format: Literal["consep_patches", "common"] = "consep_patches"
    root: Path = Path("../shared/data/consep_patches/train")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of source tiles held out.")
    split_seed: int = 0
    on_error: Literal["fail", "skip"] = "fail"
    stain: StainNormConfig = Field(
        default_factory=StainNormConfig,
        description="Stain normalisation of train and val images at load time; the fitted target "
        "is stored in the checkpoints and applied at inference (see StainNormConfig).",
    )


class SamplingConfig(BaseModel):
    """How training crops are drawn each epoch (see `data.mix`)."""

    model_config = ConfigDict(extra="forbid")

    samples_per_epoch: int | None = Field(
        None, ge=1, description="Crops per epoch (default: one per training image)."
    )
    rare_class_strength: float = Field(
        0.0, ge=0,
        description="Draw a patch 1 + strength × (its nuclei's mean rarity weight w_c / max w) "
        "times as often: patches rich in rare types are seen more. 0 = off.",
    )


class CostConfig(BaseModel):
    """Penalty matrix W of the cost-sensitive loss: given, or from training-set class counts."""

    model_config = ConfigDict(extra="forbid")

    matrix: list[list[float]] | None = Field(None, description="Explicit W (n_types × n_types).")
    counts: Literal["pixels", "instances"] = "pixels"
    power: float = Field(0.5, gt=0, description="w_c = (n_max / n_c)^power.")


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_epochs: int = Field(25, ge=1, description="Step schedule: LR × 0.1 every this many epochs.")
    min_lr: float = Field(1e-5, ge=0)
    freeze_encoder_epochs: int = Field(
        0, ge=0, description="Paper's phase 1 (frozen encoders); useful only with pretrained encoders."
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out_dir: Path = Path("runs/train")
    epochs: int = Field(50, ge=1)
    batch_size: int = Field(8, ge=1)
    seed: int = 0
    num_workers: int = Field(1, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on capable CPUs, fp16/bf16 on CUDA.")
    channels_last: bool = True
    mpp: float = Field(
        0.25, gt=0,
        description="Pixel size of the training data (µm/px); samples more than 5 % off are refused.",
    )
    patch_size: int = Field(
        256, ge=32, multiple_of=32,
        description="Training crops are patch_size² (random crop; smaller images padded). "
        "Validation scores use whole images, tiled; the validation loss uses centre crops.",
    )
    init_from: Path | None = Field(
        None,
        description="Start from the weights of this checkpoint (shipped default, best.pt, last.pt) "
        "with a fresh optimizer and schedule: fine-tuning on own data, or continuing a run under a "
        "new learning-rate schedule. Its architecture and classes must match model and data. "
        "Ignored when out_dir/last.pt exists (that run resumes instead).",
    )
    val_every: int = Field(1, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1, description="For smoke tests.")
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    cost: CostConfig = CostConfig()
    sampling: SamplingConfig = SamplingConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    data: DataConfig = DataConfig()
