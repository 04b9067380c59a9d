"""Colour deconvolution (wsi_pipeline.deconvolution): QuPath's conventions, known stain mixtures
give their amounts back, and scikit-image agrees where its conventions allow."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from skimage.color import rgb2hed, separate_stains
from skimage.color.colorconv import rgb_from_hed

from wsi_pipeline.deconvolution import (
    QUPATH_BACKGROUND,
    QUPATH_EOSIN,
    QUPATH_HEMATOXYLIN,
    deconvolve,
    od_lut,
    rgb_to_od,
    stain_matrix,
)
from wsi_pipeline.postproc.config import OpticalDensityConfig


def _mix(c_h: float, c_e: float, background=QUPATH_BACKGROUND) -> np.ndarray:
    """The uint8 colour of a pixel holding c_h of haematoxylin and c_e of eosin (log10 OD)."""
    m = stain_matrix()
    od = c_h * m[0] + c_e * m[1]
    return np.round(np.asarray(background) * 10.0 ** -od).astype(np.uint8)


def test_od_is_qupaths_log10_with_clipping():
    lut = od_lut()
    assert lut.shape == (3, 256)
    assert lut[0, 255] == 0.0 and lut[0, 0] == pytest.approx(np.log10(255))  # 0 read as 1
    assert lut[1, 1] == pytest.approx(np.log10(255)) and lut[2, 25] == pytest.approx(-np.log10(25 / 255))
    # below 255 background: brighter pixels are glass (OD 0), never negative
    bg = od_lut((240, 240, 242))
    assert bg[0, 250] == 0.0 and bg[2, 242] == 0.0 and bg[0, 24] == pytest.approx(1.0)
    rgb = np.array([[[255, 128, 1]]], np.uint8)
    np.testing.assert_allclose(rgb_to_od(rgb)[0, 0], [0.0, -np.log10(128 / 255), np.log10(255)])
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_od(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="background"):
        od_lut((0, 255, 255))


def test_stain_matrix_is_qupaths_h_and_e_default():
    m = stain_matrix()
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0)
    np.testing.assert_allclose(m[0], np.array(QUPATH_HEMATOXYLIN) / np.linalg.norm(QUPATH_HEMATOXYLIN))
    np.testing.assert_allclose(m[1], np.array(QUPATH_EOSIN) / np.linalg.norm(QUPATH_EOSIN))
    # the residual: normalised cross product, orthogonal to both stains
    np.testing.assert_allclose(m[2], np.cross(m[0], m[1]) / np.linalg.norm(np.cross(m[0], m[1])))
    assert abs(m[2] @ m[0]) < 1e-12 and abs(m[2] @ m[1]) < 1e-12
    # the config's defaults are the same vectors, and its validator refuses unusable ones
    cfg = OpticalDensityConfig()
    assert not cfg.enabled
    assert (cfg.hematoxylin, cfg.eosin, cfg.background) == (QUPATH_HEMATOXYLIN, QUPATH_EOSIN,
                                                             QUPATH_BACKGROUND)
    for bad in ({"eosin": [1.30222, 1.40238, 0.58098]}, {"hematoxylin": [-0.1, 0.7, 0.3]},
                {"background": [255, 255, 0]}, {"residual": [0.2159, 0.8012, 0.5581]}):
        with pytest.raises(ValidationError):
            OpticalDensityConfig.model_validate(bad)
    with pytest.raises(ValueError, match="parallel"):
        stain_matrix((1, 1, 0), (2, 2, 0))


@pytest.mark.parametrize("background", [QUPATH_BACKGROUND, (240.0, 238.0, 245.0)])
def test_known_mixtures_give_their_amounts_back(background):
    amounts = [(0.0, 0.0), (0.6, 0.0), (0.0, 0.4), (0.8, 0.3), (0.25, 0.5), (1.2, 0.1)]
    rgb = np.stack([_mix(h, e, background) for h, e in amounts])
    got = deconvolve(rgb, stain_matrix(), background)
    # 8-bit rounding of the colour: at most 0.5 / (v ln 10) OD per channel (v >= 40 here)
    np.testing.assert_allclose(got[:, :2], amounts, atol=0.01)
    np.testing.assert_allclose(got[:, 2], 0.0, atol=0.01)  # nothing in the residual
    assert np.all(got[0] == 0.0)  # the background itself: no stain at all


def test_same_matrix_as_scikit_image_gives_six_times_its_amounts():
    """skimage divides log10 OD by 6 (log(1e-6)) and clips at 0; otherwise the same algebra."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, size=(4000, 3), dtype=np.uint8)  # >= 1: both floors agree
    rgb = np.concatenate([rgb, _mix(0.7, 0.2)[None], np.array([[255, 255, 255]], np.uint8)])
    m = stain_matrix()
    ours = deconvolve(rgb, m)
    theirs = separate_stains(rgb[None], np.linalg.inv(m))[0]
    np.testing.assert_allclose(np.maximum(ours, 0), 6 * theirs, atol=1e-9)
    # rgb2hed with skimage's own H, E, DAB vectors (rows of norm ~0.998-1.003, used unnormalised
    # there): ours are its amounts x 6 x each row's norm
    m_hed = stain_matrix(*rgb_from_hed)
    ours = deconvolve(rgb, m_hed)
    expected = 6 * rgb2hed(rgb[None])[0] * np.linalg.norm(rgb_from_hed, axis=1)
    np.testing.assert_allclose(np.maximum(ours, 0), expected, atol=1e-9)
