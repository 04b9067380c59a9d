"""H&E augmentation on numpy arrays, fast enough for a CPU data loader.

Geometry (flips/90° rotations, small affine) is applied identically to the image and the label
maps; labels are resampled nearest-neighbour so instance ids survive. Colour changes touch only
the image: HED jitter (Tellez et al., 2018: perturb the haematoxylin/eosin/DAB concentrations of
skimage's colour deconvolution), brightness/contrast/saturation, and Gaussian blur.

Scan degradation reproduces what the engine feeds the network from a 20× scanner: the 0.25 µm/px
patch is shrunk to 0.5 µm/px (as the scanner's optics and pyramid would record it), JPEG-encoded
at a random quality (Aperio writes Q 30–90), decoded, and enlarged back to 0.25 µm/px with the
very resampling `Slide.read_region_at_mpp` applies to every tile (`wsi_pipeline.resample`). The
labels keep their geometry exactly: the round trip spans the same extent.

Everything is vectorised numpy; the affine warp gathers pixels directly instead of calling
`scipy.ndimage.affine_transform` once per channel, and the HED round trip is one 3×3 matrix in
log-RGB space (deconvolution, per-stain scaling and reconvolution are all linear there).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.color import hed_from_rgb, rgb_from_hed

from wsi_pipeline.datasets.augment_config import AugmentConfig
from wsi_pipeline.labels import relabel
from wsi_pipeline.resample import resize_rgb, scaled_size

_LOG_ADJUST = np.log(1e-6)
# log of each uint8 value as skimage's rgb2hed sees it (max(v/255, 1e-6)).
_LOG_LUT = np.log(np.maximum(np.arange(256) / 255.0, 1e-6)).astype(np.float32)


def hed_jitter(image: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Scale stain concentrations by `alpha` and shift them by `beta` (3 values each, H, E, D).

    Equals skimage's `hed2rgb(rgb2hed(image) * alpha + beta)` except that negative
    concentrations are not clipped, which keeps alpha=1, beta=0 an exact identity.
    Returns float32 RGB in [0, 1].
    """
    mix = (hed_from_rgb * np.asarray(alpha, dtype=np.float64)[None, :]) @ rgb_from_hed
    offset = _LOG_ADJUST * (np.asarray(beta, dtype=np.float64) @ rgb_from_hed)
    log_rgb = _LOG_LUT[image].reshape(-1, 3) @ mix.astype(np.float32) + offset.astype(np.float32)
    return np.clip(np.exp(log_rgb), 0.0, 1.0).reshape(image.shape).astype(np.float32, copy=False)


def _dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(0, 1))
    return np.ascontiguousarray(a[:, ::-1] if flip else a)


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Mirror indices into 0..n-1 with the edge pixel repeated (numpy 'symmetric')."""
    i = np.where(i < 0, -i - 1, i)
    i = np.where(i >= n, 2 * n - 1 - i, i)
    return np.clip(i, 0, n - 1)


def _affine_source(shape: tuple[int, int], matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source (row, col) of every output pixel for a warp about the centre; `matrix` maps output
    offsets to source offsets in (row, col)."""
    h, w = shape
    cr, cc = (h - 1) / 2.0, (w - 1) / 2.0
    r = np.arange(h, dtype=np.float32)[:, None] - cr
    c = np.arange(w, dtype=np.float32)[None, :] - cc
    src_r = matrix[0, 0] * r + matrix[0, 1] * c + cr
    src_c = matrix[1, 0] * r + matrix[1, 1] * c + cc
    return src_r.astype(np.float32), src_c.astype(np.float32)


def warp_image(image: np.ndarray, src_r: np.ndarray, src_c: np.ndarray) -> np.ndarray:
    """Bilinear resampling with mirrored borders; returns float32 (H,W,C) in the input's range."""
    h, w = image.shape[:2]
    r0, c0 = np.floor(src_r), np.floor(src_c)
    fr, fc = src_r - r0, src_c - c0
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    ra, rb = _reflect(r0, h) * w, _reflect(r0 + 1, h) * w
    ca, cb = _reflect(c0, w), _reflect(c0 + 1, w)
    corners = ((ra + ca, (1 - fr) * (1 - fc)), (ra + cb, (1 - fr) * fc),
               (rb + ca, fr * (1 - fc)), (rb + cb, fr * fc))
    out = np.empty(image.shape, np.float32)
    for k in range(image.shape[2]):  # 1-D gathers per channel are much faster than row gathers
        channel = image[..., k].ravel().astype(np.float32)
        out[..., k] = sum(channel[idx] * weight for idx, weight in corners)
    return out


def warp_labels(
    inst_map: np.ndarray, type_map: np.ndarray | None, src_r: np.ndarray, src_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Nearest-neighbour resampling with mirrored borders.

    A mirrored copy of a nucleus is a different nucleus: pixels sampled from outside the patch get
    new instance ids (one per mirror cell) so no id covers two disjoint places.
    """
    h, w = inst_map.shape
    ri = np.rint(src_r).astype(np.int64)
    ci = np.rint(src_c).astype(np.int64)
    cell = ((ri < 0) + 2 * (ri >= h)) * 3 + ((ci < 0) + 2 * (ci >= w))
    idx = _reflect(ri, h) * w + _reflect(ci, w)
    inst = inst_map.reshape(-1)[idx]
    mirrored = (cell > 0) & (inst > 0)
    if mirrored.any():
        inst = np.where(mirrored, inst + cell * (int(inst_map.max()) + 1), inst)
        inst = relabel(inst)
    typ = None if type_map is None else type_map.reshape(-1)[idx]
    return inst.astype(np.int32, copy=False), typ


def random_affine_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Output→source (row, col) matrix: inverse of rotation · shear · zoom."""
    theta = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    shear = np.tan(np.deg2rad(rng.uniform(-cfg.shear_deg, cfg.shear_deg)))
    zoom = rng.uniform(*cfg.scale)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    forward = rot @ np.array([[1.0, shear], [0.0, 1.0]]) * zoom
    return np.linalg.inv(forward)


def color_jitter(
    image: np.ndarray, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """float32 RGB in [0, 1] → same: saturation about the grey value, contrast about the mean."""
    grey = image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = grey[..., None] + saturation * (image - grey[..., None])
    out = (out - grey.mean()) * contrast + grey.mean() + brightness
    return np.clip(out, 0.0, 1.0)


class Augmenter:
    """Callable `(image uint8 (H,W,3), inst_map, type_map | None, rng) -> same types, augmented`.

    All randomness comes from `rng`, so a caller that seeds it per (seed, epoch, index) gets
    reproducible, resumable augmentation.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(
        self,
        image: np.ndarray,
        inst_map: np.ndarray,
        type_map: np.ndarray | None,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        cfg = self.config
        if cfg.flip_rot90:
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            image = _dihedral(image, k, flip)
            inst_map = _dihedral(inst_map, k, flip)
            type_map = None if type_map is None else _dihedral(type_map, k, flip)
        img: np.ndarray | None = None  # float32 [0,1] once any step has needed it
        if rng.random() < cfg.p_affine:
            src_r, src_c = _affine_source(inst_map.shape, random_affine_matrix(rng, cfg))
            img = warp_image(image, src_r, src_c) / 255.0
            inst_map, type_map = warp_labels(inst_map, type_map, src_r, src_c)
        if rng.random() < cfg.p_scan:
            quality = int(rng.integers(cfg.scan_jpeg_quality[0], cfg.scan_jpeg_quality[1] + 1))
            img = scan_degrade(image if img is None else to_uint8(img), cfg.scan_factor, quality)
            img = img.astype(np.float32) / 255.0
        if rng.random() < cfg.p_hed:
            alpha = rng.uniform(1 - cfg.hed_alpha, 1 + cfg.hed_alpha, 3)
            beta = rng.uniform(-cfg.hed_beta, cfg.hed_beta, 3)
            base = image if img is None else to_uint8(img)
            img = hed_jitter(base, alpha, beta)
        if rng.random() < cfg.p_color:
            img = image.astype(np.float32) / 255.0 if img is None else img
            img = color_jitter(
                img,
                rng.uniform(-cfg.brightness, cfg.brightness),
                rng.uniform(1 - cfg.contrast, 1 + cfg.contrast),
                rng.uniform(1 - cfg.saturation, 1 + cfg.saturation),
            )
        if rng.random() < cfg.p_blur:
            img = image.astype(np.float32) / 255.0 if img is None else img
            sigma = rng.uniform(*cfg.blur_sigma)
            img = ndi.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")
        return (image if img is None else to_uint8(img)), inst_map, type_map


def scan_degrade(image: np.ndarray, factor: float, quality: int) -> np.ndarray:
    """uint8 RGB as a scanner at `factor`× the pixel size with JPEG `quality` records it, read
    back at the original pixel size the way the engine reads slide tiles."""
    h, w = image.shape[:2]
    small = resize_rgb(image, scaled_size((h, w), 1.0 / factor))
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, format="JPEG", quality=int(quality))
    small = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return resize_rgb(small, (w, h))


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
