"""Configuration of a training run (configs/train_*.yaml), every section's model included:
stain normalisation (applied by `stain`), augmentation (`data.augment`), loss weights
(`model.losses`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsi_pipeline.datasets.augment_config import AugmentConfig
from wsi_pipeline.datasets.mix import DatasetSpec
from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.postproc.config import PostprocConfig

#: side of the training crops (`TrainConfig.patch_size`): the training patch, not the inference
#: tile (`inference.config.DEFAULT_TILE_SIZE`), though both are 256 by default
TRAIN_PATCH_SIZE = 256


class StainNormConfig(BaseModel):
    """Which normaliser to build and what to fit its target on.

    Use it when the training data come from one lab (one stain protocol, one scanner) and the
    model will see slides from others: every training image is mapped onto the reference
    appearance, and the fitted target is stored in the checkpoint so that inference maps every
    image (tile mode) or slide (one estimate per slide) onto the same appearance. Reinhard
    (Lab mean/std) is robust on small, nucleus-dense patches; Macenko (H/E stain vectors) is
    more faithful on large fields of view but its per-patch estimate is unstable on 256² CoNSeP
    patches (see `wsi_pipeline.stain`). "none" keeps the images as they are (the shipped model).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["none", "macenko", "reinhard"] = Field("none", description="normaliser")
    reference_images: list[Path] = Field(
        default_factory=list,
        description="RGB images whose appearance is the target; empty = Macenko's published "
        "reference (Reinhard needs at least one image)",
    )
    light_intensity: float = Field(240.0, gt=0, le=255, description="Macenko I_0 (bright glass)")
    od_threshold: float = Field(0.15, gt=0, description="Macenko: pixels with any OD below are glass")
    angle_percentile: float = Field(1.0, gt=0, lt=50, description="Macenko robust extreme angle")



class LossConfig(BaseModel):
    """Weights of the loss terms (HoVer-Net's defaults for NS/HV) and the cost-sensitive λ."""

    model_config = ConfigDict(extra="forbid")

    ns_ce: float = 1.0
    ns_dice: float = 1.0
    hv_mse: float = 1.0
    hv_msge: float = 1.0
    nc_ce: float = 1.0
    nc_dice: float = 1.0
    lam: float = Field(0.2, ge=0, description="Weight of the expected misclassification cost.")



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


class PointLabelConfig(BaseModel):
    """How point-labelled images (`datasets.points`) become type targets: each labelled point's
    class goes to the nucleus the network itself outlines under it (its post-processed
    prediction, computed once per image and cached), or to a disk where none does."""

    model_config = ConfigDict(extra="forbid")

    instances_from: Path | None = Field(
        None, description="Checkpoint whose predicted instances the points label (default: "
        "init_from). Segmentation only: its type branch plays no part.",
    )
    cache_dir: Path | None = Field(
        None, description="Where the predicted instances are cached (default: "
        "<out_dir>/point_instances); keyed by checkpoint, post-processing and image content.",
    )
    refresh: bool = Field(False, description="Recompute the cached instances.")
    disk_um: float = Field(3.0, gt=0, description="Radius of a point no instance covers (µm).")
    snap_um: float = Field(1.5, ge=0, description="A point this close to an instance labels it (µm).")


class SamplingConfig(BaseModel):
    """How training crops are drawn each epoch (see `datasets.mix`)."""

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


#: the network's parts by their module names in `MultiTaskNet`, which `optim.train_parts` names
NetworkPart = Literal["encoders.ns", "encoders.hv", "encoders.nc", "attention",
                      "decoders.ns", "decoders.hv", "decoders.nc"]
NETWORK_PARTS: tuple[str, ...] = get_args(NetworkPart)


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
    train_parts: list[NetworkPart] | None = Field(
        None, min_length=1,
        description="Train only these parts of the network; the others keep `init_from`'s weights "
        "and BatchNorm statistics exactly (evaluation mode). ['decoders.nc'] retrains the type "
        "decoder on frozen features (decoupled classifier re-training for rare types): NS and HV "
        "outputs stay bit for bit those of `init_from`. None = every part.",
    )
    ema_decay: float = Field(
        0.0, ge=0, lt=1,
        description="Exponential moving average of the weights (and BatchNorm statistics), updated "
        "after every step: w_ema = d·w_ema + (1 − d)·w. Validation, best.pt and last.pt's weights are "
        "the average, which is less noisy than the last step's weights with batches of 8; 0 = off. "
        "0.995 averages over ~200 steps (~3 epochs of 480 crops).",
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
        TRAIN_PATCH_SIZE, ge=32, multiple_of=32,
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
    classes: list[str] | None = Field(
        None, min_length=1,
        description="The type classes this run trains (background excluded), in the order of "
        "the type head's outputs; None = the typed data's. Point-labelled sets map onto them "
        "(their class_map). Classes other than init_from's replace its type head "
        "(decoders.nc.head, freshly initialised; every other weight copied): a lab's own types.",
    )
    val_every: int = Field(1, ge=1)
    selection: list[str] | None = Field(
        None, min_length=1,
        description="Validation scores whose mean picks best.pt, as history.csv names them "
        "without `val_` (a mix: `consep_pq`, `consep_mpq`, `monuseg_pq`, or the means over its "
        "datasets, `pq`, `mpq`). Checked against this run's validation sets before training. "
        "None = the mean of `pq` and `mpq`.",
    )
    validate_start: bool = Field(
        False, description="Validate the starting weights (init_from) before the first epoch: "
        "history.csv row epoch 0, the yardstick a fine-tune must beat.",
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="For smoke tests.")
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    cost: CostConfig = CostConfig()
    sampling: SamplingConfig = SamplingConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    data: DataConfig = DataConfig()
    points: PointLabelConfig = PointLabelConfig()
    postproc: PostprocConfig = Field(
        default_factory=PostprocConfig,
        description="Post-processing of the validation scores (PQ, mPQ, F_d, F_c), and so of the "
        "best-epoch choice: the `postproc:` section of a run config; recorded in the checkpoints' "
        "train_config.",
    )

    @model_validator(mode="after")
    def _classes_match_the_head(self) -> TrainConfig:
        if self.classes is not None:
            if len(self.classes) + 1 != self.model.n_types:
                raise ValueError(f"classes {self.classes} need model.n_types = "
                                 f"{len(self.classes) + 1} (background + {len(self.classes)})")
            if len(set(self.classes)) != len(self.classes) or "background" in self.classes:
                raise ValueError(f"classes {self.classes}: names must be unique and not 'background'")
        return self

    @model_validator(mode="after")
    def _frozen_parts_need_weights(self) -> TrainConfig:
        """Parts outside `optim.train_parts` keep their starting weights, which only mean
        something when they come from a checkpoint."""
        if self.optim.train_parts is not None and self.init_from is None:
            raise ValueError("optim.train_parts freezes the other parts of the network at their "
                             "starting weights: set init_from to the checkpoint they come from")
        return self
