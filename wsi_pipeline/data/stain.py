"""Stain normalisation (Macenko 2009, Reinhard 2001), applied once per sample, not per epoch.

Normalisation maps every image onto one reference colour appearance; it is deterministic, so
it belongs at load time (`normalize_samples`) and the same normaliser must then be applied at
inference. Random stain *variation* for training is `augment.hed_jitter`.

Measured limitation: on single 256² CoNSeP patches Macenko's per-image stain estimate is unstable
(the E vector often lands near H, since these nucleus-dense 40× patches show little pure eosin),
so it can make a re-stained patch worse; Reinhard is the robust choice for such patches, and
Macenko suits larger fields of view (whole tiles, slide regions).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from skimage.color import lab2rgb, rgb2lab

from wsi_pipeline.data.sample import Sample

# Reference H and E optical-density unit vectors (columns) and 99th-percentile concentrations
# commonly used with Macenko's method.
MACENKO_REF_STAINS = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MACENKO_REF_MAX_CONC = np.array([1.9705, 1.0308])


class StainNormConfig(BaseModel):
    """Which normaliser to build and what to fit its target on."""

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


def _optical_density(image: np.ndarray, io: float) -> np.ndarray:
    rgb = image.reshape(-1, 3).astype(np.float64)
    return -np.log((rgb + 1.0) / io)


@dataclass(frozen=True, eq=False)
class MacenkoNormalizer:
    """Estimate each image's H/E vectors by the extreme angles of its OD in the plane of the two
    main eigenvectors, then re-render its concentrations with the target vectors."""

    stains: np.ndarray = field(default_factory=MACENKO_REF_STAINS.copy)
    max_conc: np.ndarray = field(default_factory=MACENKO_REF_MAX_CONC.copy)
    io: float = 240.0
    od_threshold: float = 0.15
    angle_percentile: float = 1.0

    def stain_matrix(self, image: np.ndarray) -> np.ndarray | None:
        """(3, 2) unit H and E vectors of `image`, or None where too little tissue is visible."""
        od = _optical_density(image, self.io)
        tissue = od[(od > self.od_threshold).all(axis=1)]
        if len(tissue) < 50:
            return None
        _, vecs = np.linalg.eigh(np.cov(tissue.T))
        plane = vecs[:, 1:3]
        plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
        proj = tissue @ plane
        phi = np.arctan2(proj[:, 1], proj[:, 0])
        lo, hi = np.percentile(phi, [self.angle_percentile, 100 - self.angle_percentile])
        v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
        v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
        he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)  # H absorbs more red
        he = np.abs(he)
        return he / np.linalg.norm(he, axis=0, keepdims=True)

    def concentrations(self, image: np.ndarray, stains: np.ndarray) -> np.ndarray:
        od = _optical_density(image, self.io)
        return np.linalg.lstsq(stains, od.T, rcond=None)[0]

    def fit(self, images: list[np.ndarray]) -> MacenkoNormalizer:
        """Target = median stain vectors and concentration percentiles over `images`."""
        mats, maxes = [], []
        for im in images:
            m = self.stain_matrix(im)
            if m is not None:
                mats.append(m)
                maxes.append(np.percentile(self.concentrations(im, m), 99, axis=1))
        if not mats:
            raise ValueError("no reference image shows enough tissue to fit Macenko stains")
        stains = np.median(mats, axis=0)
        return replace(self, stains=stains / np.linalg.norm(stains, axis=0), max_conc=np.median(maxes, axis=0))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        m = self.stain_matrix(image)
        if m is None:
            return image
        conc = self.concentrations(image, m)
        scale = self.max_conc / np.maximum(np.percentile(conc, 99, axis=1), 1e-6)
        out = self.io * np.exp(-(self.stains @ (conc * scale[:, None])))
        return np.clip(out.T.reshape(image.shape) - 1.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class ReinhardNormalizer:
    """Match per-channel mean and standard deviation in CIE-Lab to a target."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, images: list[np.ndarray]) -> ReinhardNormalizer:
        lab = np.concatenate([rgb2lab(im).reshape(-1, 3) for im in images])
        return cls(mean=lab.mean(axis=0), std=lab.std(axis=0))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        lab = rgb2lab(image)
        mu = lab.reshape(-1, 3).mean(axis=0)
        sd = np.maximum(lab.reshape(-1, 3).std(axis=0), 1e-6)
        out = (lab - mu) / sd * self.std + self.mean
        with warnings.catch_warnings():  # out-of-gamut Lab values are clipped, as intended
            warnings.simplefilter("ignore", UserWarning)
            rgb = lab2rgb(out)
        return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def build_normalizer(cfg: StainNormConfig) -> MacenkoNormalizer | ReinhardNormalizer | None:
    refs = [np.asarray(Image.open(p).convert("RGB")) for p in cfg.reference_images]
    if cfg.method == "none":
        return None
    if cfg.method == "reinhard":
        if not refs:
            raise ValueError("Reinhard normalisation needs reference_images")
        return ReinhardNormalizer.fit(refs)
    norm = MacenkoNormalizer(
        io=cfg.light_intensity, od_threshold=cfg.od_threshold, angle_percentile=cfg.angle_percentile
    )
    return norm.fit(refs) if refs else norm


def normalize_samples(samples: list[Sample], normalizer) -> list[Sample]:
    """New samples with normalised images (labels shared, not copied)."""
    if normalizer is None:
        return list(samples)
    return [replace(s, image=normalizer(s.image)) for s in samples]
