"""The settings of training-time augmentation (`datasets.augment.Augmenter`), beside the code
that applies them and importing none of it; a training config's `augment:` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """Probabilities (`p_*`) and magnitudes of each augmentation. Defaults suit 256² H&E patches."""

    model_config = ConfigDict(extra="forbid")

    flip_rot90: bool = Field(True, description="random element of the dihedral group (flips, 90° turns)")
    p_affine: float = Field(0.3, ge=0, le=1, description="probability of a small affine warp")
    rotate_deg: float = Field(15.0, ge=0, le=45, description="affine rotation drawn from ±this")
    scale: tuple[float, float] = Field(
        (0.85, 1.15), description="isotropic zoom range (scanners' stated mpp differ by ~±10 %)"
    )
    shear_deg: float = Field(5.0, ge=0, le=20, description="shear angle drawn from ±this")
    p_hed: float = Field(0.8, ge=0, le=1, description="probability of HED stain jitter")
    hed_alpha: float = Field(0.05, ge=0, le=0.5, description="each stain scaled by 1 ± this")
    hed_beta: float = Field(
        0.005, ge=0, le=0.05,
        description="each stain shifted by ± this, in skimage rgb2hed units (H is ~0.02 in CoNSeP)",
    )
    p_color: float = Field(0.8, ge=0, le=1, description="probability of brightness/contrast/saturation")
    brightness: float = Field(0.08, ge=0, le=0.5, description="additive shift on [0,1] intensities")
    contrast: float = Field(0.15, ge=0, le=0.9, description="contrast factor 1 ± this")
    saturation: float = Field(0.15, ge=0, le=0.9, description="saturation factor 1 ± this")
    p_scan: float = Field(0.3, ge=0, le=1, description="probability of 20×-scan degradation")
    scan_factor: float = Field(2.0, ge=1, le=4, description="shrink factor (0.25 -> 0.5 µm/px)")
    scan_jpeg_quality: tuple[int, int] = Field((30, 90), description="JPEG quality range")
    p_blur: float = Field(0.1, ge=0, le=1, description="probability of Gaussian blur")
    blur_sigma: tuple[float, float] = Field((0.3, 1.2), description="blur sigma range in pixels")
