"""Stain normalisation (Macenko 2009, Reinhard 2001), applied once per sample, not per epoch.

Normalisation maps every image onto one reference colour appearance; it is deterministic, so
it belongs at load time (`normalize_samples`) and the same normaliser must then be applied at
inference. Random stain *variation* for training is `data.augment.hed_jitter`.

Measured limitation: on single 256² CoNSeP patches Macenko's per-image stain estimate is unstable
(the E vector often lands near H, since these nucleus-dense 40× patches show little pure eosin),
so it can make a re-stained patch worse; Reinhard is the robust choice for such patches, and
Macenko suits larger fields of view (whole tiles, slide regions).

Each normaliser is split into `source_stats` (what the image's own stain looks like) and `apply`
(map it onto the target with given source statistics): `__call__` estimates per image (training
patches, tile mode), while a whole slide is estimated once from pixels pooled over several
tissue tiles and every tile is then mapped with that one estimate. Per-tile estimates would give
overlapping tiles different colours where they meet, and so different predictions at the seams.
The fitted target travels in the checkpoint (`to_meta` / `normalizer_from_meta`) so inference
applies exactly what training did.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image
from skimage.color import lab2rgb, rgb2lab

if TYPE_CHECKING:  # runtime (inference) code imports this module without the training data
    from wsi_pipeline.datasets.sample import Sample
    from wsi_pipeline.training.config import StainNormConfig

log = logging.getLogger(__name__)

# Reference H and E optical-density unit vectors (columns) and 99th-percentile concentrations
# commonly used with Macenko's method.
MACENKO_REF_STAINS = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
MACENKO_REF_MAX_CONC = np.array([1.9705, 1.0308])
# An estimate needs at least this many stained pixels (OD above the glass threshold in every
# channel); fewer, and the image is left as it is rather than coloured after glass or noise.
MIN_STAINED_PIXELS = 50
GLASS_IO, GLASS_OD = 240.0, 0.15  # Reinhard's stained-pixel test: Macenko's default I_0 and threshold


def _optical_density(image: np.ndarray, io: float) -> np.ndarray:
    rgb = image.reshape(-1, 3).astype(np.float64)
    return -np.log((rgb + 1.0) / io)


def _stained(od: np.ndarray, od_threshold: float) -> np.ndarray:
    """Rows of `od` dense enough in every channel to be tissue rather than glass."""
    return od[(od > od_threshold).all(axis=1)]


def _as_json(obj: Any) -> dict:
    """A dataclass of arrays and floats as JSON-able lists and floats (exact for float64)."""
    return {f.name: np.asarray(v).tolist() if isinstance(v := getattr(obj, f.name), np.ndarray)
            else float(v) for f in fields(obj)}


class _JsonFields:
    """`to_meta()` for a dataclass of arrays and floats."""

    def to_meta(self) -> dict:
        return _as_json(self)


@dataclass(frozen=True, eq=False)
class MacenkoStats(_JsonFields):
    """A source's own H/E unit vectors (3, 2) and 99th-percentile concentrations (2,)."""

    stains: np.ndarray
    max_conc: np.ndarray


@dataclass(frozen=True, eq=False)
class ReinhardStats(_JsonFields):
    """A source's per-channel CIE-Lab mean and standard deviation."""

    mean: np.ndarray
    std: np.ndarray


class _SourceNormalizer:
    """What both normalisers share: an image on its own is normalised with its own statistics;
    the meta names the method beside the fitted target."""

    method: ClassVar[str]

    if TYPE_CHECKING:  # what each subclass defines, for the shared methods below
        def source_stats(self, pixels: np.ndarray) -> Any: ...
        def apply(self, image: np.ndarray, stats: Any) -> np.ndarray: ...

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """`image` normalised with its own statistics; unchanged where it shows too little tissue."""
        stats = self.source_stats(image)
        return image if stats is None else self.apply(image, stats)

    def to_meta(self) -> dict:
        return {"method": self.method, "target": _as_json(self)}


@dataclass(frozen=True, eq=False)
class MacenkoNormalizer(_SourceNormalizer):
    """Estimate each image's H/E vectors by the extreme angles of its OD in the plane of the two
    main eigenvectors, then re-render its concentrations with the target vectors."""

    stains: np.ndarray = field(default_factory=MACENKO_REF_STAINS.copy)
    max_conc: np.ndarray = field(default_factory=MACENKO_REF_MAX_CONC.copy)
    io: float = 240.0
    od_threshold: float = 0.15
    angle_percentile: float = 1.0
    method: ClassVar[str] = "macenko"

    def stain_matrix(self, image: np.ndarray) -> np.ndarray | None:
        """(3, 2) unit H and E vectors of `image`, or None where too little tissue is visible."""
        return self._stain_matrix(_optical_density(image, self.io))

    def _stain_matrix(self, od: np.ndarray) -> np.ndarray | None:
        tissue = _stained(od, self.od_threshold)
        if len(tissue) < MIN_STAINED_PIXELS:
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

    @staticmethod
    def _unmix(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(stains, od.T, rcond=None)[0]

    def fit(self, images: list[np.ndarray]) -> MacenkoNormalizer:
        """Target = median stain vectors and concentration percentiles over `images`."""
        found = [st for st in map(self.source_stats, images) if st is not None]
        if not found:
            raise ValueError("no reference image shows enough tissue to fit Macenko stains")
        stains = np.median([st.stains for st in found], axis=0)
        return replace(self, stains=stains / np.linalg.norm(stains, axis=0),
                       max_conc=np.median([st.max_conc for st in found], axis=0))

    def source_stats(self, pixels: np.ndarray) -> MacenkoStats | None:
        """Stain vectors and concentration scale of `pixels` (RGB uint8 of any shape (..., 3):
        one image, or tiles stacked); None where too little tissue is visible."""
        od = _optical_density(pixels, self.io)
        m = self._stain_matrix(od)
        if m is None:
            return None
        return MacenkoStats(stains=m, max_conc=np.percentile(self._unmix(od, m), 99, axis=1))

    def apply(self, image: np.ndarray, stats: MacenkoStats) -> np.ndarray:
        """Unmix `image` with the source vectors, rescale, re-render with the target's."""
        conc = self._unmix(_optical_density(image, self.io), stats.stains)
        scale = self.max_conc / np.maximum(stats.max_conc, 1e-6)
        out = self.io * np.exp(-(self.stains @ (conc * scale[:, None])))
        return np.clip(out.T.reshape(image.shape) - 1.0 + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True, eq=False)
class ReinhardNormalizer(_SourceNormalizer):
    """Match per-channel mean and standard deviation in CIE-Lab to a target."""

    mean: np.ndarray
    std: np.ndarray
    method: ClassVar[str] = "reinhard"

    @classmethod
    def fit(cls, images: list[np.ndarray]) -> ReinhardNormalizer:
        lab = np.concatenate([rgb2lab(im).reshape(-1, 3) for im in images])
        return cls(mean=lab.mean(axis=0), std=lab.std(axis=0))

    def source_stats(self, pixels: np.ndarray) -> ReinhardStats | None:
        """Lab mean and std of `pixels` (RGB uint8 of any shape (..., 3)); None where fewer than
        MIN_STAINED_PIXELS are stained: the statistics of glass would tint it like tissue."""
        rgb = pixels.reshape(-1, 1, 3)
        if len(_stained(_optical_density(rgb, GLASS_IO), GLASS_OD)) < MIN_STAINED_PIXELS:
            return None
        lab = rgb2lab(rgb).reshape(-1, 3)
        return ReinhardStats(mean=lab.mean(axis=0), std=np.maximum(lab.std(axis=0), 1e-6))

    def apply(self, image: np.ndarray, stats: ReinhardStats) -> np.ndarray:
        """Per-pixel affine map of Lab from the source's mean/std to the target's."""
        out = (rgb2lab(image) - stats.mean) / stats.std * self.std + self.mean
        with warnings.catch_warnings():  # out-of-gamut Lab values are clipped, as intended
            warnings.simplefilter("ignore", UserWarning)
            rgb = lab2rgb(out)
        return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


# A MacenkoNormalizer or a ReinhardNormalizer. Their base rather than the union: with the union a
# type checker pairs either class's `apply` with either's statistics and rejects
# `n.apply(image, n.source_stats(image))`.
Normalizer = _SourceNormalizer


def build_normalizer(cfg: StainNormConfig) -> Normalizer | None:
    """The configured normaliser with its target fitted; None for method "none"."""
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


def normalizer_from_meta(meta: dict | None) -> Normalizer | None:
    """Rebuild the normaliser a checkpoint was trained with from its `meta["stain"]`
    (`to_meta()` output); None for checkpoints trained without one."""
    if not meta or meta.get("method", "none") == "none":
        return None
    classes = {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer}
    if meta["method"] not in classes:
        raise ValueError(f"unknown stain normalisation method {meta['method']!r}")
    target = {k: np.asarray(v, np.float64) if isinstance(v, list) else v
              for k, v in meta["target"].items()}
    return classes[meta["method"]](**target)


def normalize_samples(samples: list[Sample], normalizer: Normalizer | None) -> list[Sample]:
    """New samples with normalised images (labels shared, not copied)."""
    if normalizer is None:
        return list(samples)
    return [replace(s, image=normalizer(s.image)) for s in samples]
