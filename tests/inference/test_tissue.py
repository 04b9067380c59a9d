"""Tissue detection: real slides, constructed cases with µm-sized clean-up, empty slides."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from wsi_pipeline.inference.config import TissueConfig
from wsi_pipeline.inference.tissue import detect_tissue, save_tissue
from wsi_pipeline.io import open_slide

PINK = (215, 120, 170)


def canvas(shape=(200, 200)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(242, 3, (*shape, 3)), 0, 255).astype(np.uint8)


def test_cmu_tissue_area(shared_data):
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        thumb = slide.thumbnail_at_mpp(8.0)
    result = detect_tissue(thumb, 8.0)
    # the slide is 1.64 mm2, a strip of skin covering roughly 40 % of it
    assert 0.4 < result.mm2 < 1.0
    assert 0.3 < result.mask.mean() < 0.7


def test_tcga_tissue_area(shared_data):
    with open_slide(shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs", mpp=0.5) as slide:
        thumb = slide.thumbnail_at_mpp(8.0)
    result = detect_tissue(thumb, 8.0)
    assert 0.5 < result.mask.mean() < 0.85  # one large section over a grey scanner background


def test_disk_area_specks_and_holes_in_microns():
    img = canvas()
    rr, cc = disk((100, 100), 50)
    img[rr, cc] = PINK
    img[98:102, 98:102] = 242  # small hole inside tissue: filled
    img[10:12, 10:12] = PINK  # speck: removed
    cfg = TissueConfig(dilate_um=0)
    result = detect_tissue(img, 8.0, cfg)
    assert result.mm2 == pytest.approx(np.pi * 50**2 * 64 / 1e6, rel=0.03)
    assert result.mask[100, 100] and not result.mask[11, 11]
    # same physical scene at half the pixel size: same area
    big = np.asarray(Image.fromarray(img).resize((400, 400), Image.Resampling.NEAREST))
    assert detect_tissue(big, 4.0, cfg).mm2 == pytest.approx(result.mm2, rel=0.03)


def test_dilation_grows_mask_but_not_area():
    img = canvas()
    rr, cc = disk((100, 100), 30)
    img[rr, cc] = PINK
    plain = detect_tissue(img, 8.0, TissueConfig(dilate_um=0))
    dilated = detect_tissue(img, 8.0, TissueConfig(dilate_um=40))
    assert dilated.mm2 == plain.mm2
    assert dilated.mask.sum() > plain.mask.sum()
    assert dilated.mask[100, 100 + 30 + 4] and not plain.mask[100, 100 + 30 + 4]


@pytest.mark.parametrize("fill", [255, 242, 230])
def test_blank_slide_has_no_tissue(fill):
    img = np.clip(canvas().astype(int) - 242 + fill, 0, 255).astype(np.uint8)
    result = detect_tissue(img, 8.0)
    assert result.empty and result.mm2 == 0.0


def test_save_tissue(tmp_path):
    img = canvas()
    img[50:150, 50:150] = PINK
    result = detect_tissue(img, 8.0)
    save_tissue(result, tmp_path)
    mask = np.asarray(Image.open(tmp_path / "tissue.png"))
    np.testing.assert_array_equal(mask > 0, result.mask)
    meta = json.loads((tmp_path / "tissue.json").read_text())
    assert meta["mm2"] == pytest.approx(result.mm2) and meta["thumb_mpp"] == 8.0
    assert not list(tmp_path.glob(".*tmp"))


def test_small_blank_thumbnail_is_not_a_hole():
    """A thumbnail smaller than the hole-size limit: its background must not be 'filled'."""
    result = detect_tissue(np.full((10, 13, 3), 250, np.uint8), 8.0)
    assert result.empty


def test_large_holes_stay_open():
    img = canvas((300, 300))
    img[20:280, 20:280] = PINK
    img[60:240, 60:240] = 242  # 180 px = 1.44 mm wide hole: a real gap, not filled
    result = detect_tissue(img, 8.0, TissueConfig(dilate_um=0))
    assert not result.mask[150, 150] and result.mask[30, 30]


def test_clefts_larger_than_max_hole_stay_holes_smaller_ones_are_filled():
    """A cleft inside the section is not tissue: counting it would lower every density."""
    img = canvas((300, 300))
    rr, cc = disk((150, 150), 120)
    img[rr, cc] = PINK
    img[60:80, 100:200] = 242  # cleft of 20 x 100 px = 128,000 µm² at 8 µm/px: stays a hole
    img[200:206, 140:146] = 242  # pale spot of 36 px = 2,304 µm²: filled
    cfg = TissueConfig(max_hole_um2=10_000, dilate_um=0)
    result = detect_tissue(img, 8.0, cfg)
    assert not result.mask[70, 150] and result.mask[203, 143]
    disc_um2 = np.pi * 120**2 * 64
    assert result.mm2 * 1e6 == pytest.approx(disc_um2 - 20 * 100 * 64, rel=0.02)
    assert result.holes["max_hole_um2"] == 10_000 and result.holes["kept_holes"] == 1
    assert result.holes["kept_um2"] == pytest.approx(20 * 100 * 64)
    assert result.holes["filled_um2"] == pytest.approx(36 * 64)
    assert "10000 µm²" in result.holes["rule"]
    # a threshold above the cleft's area fills it as well (the old behaviour)
    filled = detect_tissue(img, 8.0, TissueConfig(max_hole_um2=200_000, dilate_um=0))
    assert filled.mask[70, 150] and filled.holes["kept_holes"] == 0
    assert filled.mm2 > result.mm2


def test_default_keeps_the_clefts_of_the_real_skin_section(shared_data):
    """CMU-1-Small-Region has clefts of ≈10,000 and ≈17,000 µm² in its dermis; the default rule
    keeps them open and fills only small pale spots."""
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        thumb = slide.thumbnail_at_mpp(8.0)
    result = detect_tissue(thumb, 8.0, TissueConfig(dilate_um=0))
    assert result.holes["kept_holes"] >= 2 and result.holes["kept_um2"] > 25_000
    old = detect_tissue(thumb, 8.0, TissueConfig(max_hole_um2=50_000, dilate_um=0))
    assert result.mm2 < old.mm2 - 0.025


def test_tissue_png_shows_the_measured_mask_and_the_margin(tmp_path):
    img = canvas((300, 300))
    rr, cc = disk((150, 150), 120)
    img[rr, cc] = PINK
    img[60:80, 100:200] = 242
    result = detect_tissue(img, 8.0, TissueConfig(max_hole_um2=10_000, dilate_um=40))
    save_tissue(result, tmp_path)
    png = np.asarray(Image.open(tmp_path / "tissue.png"))
    np.testing.assert_array_equal(png > 0, result.mask)  # inferred mask: unchanged meaning
    np.testing.assert_array_equal(png == 255, result.measured)
    assert result.measured.sum() * 64 / 1e6 == pytest.approx(result.mm2)
    # the cleft is 20 px wide: the 5 px margin narrows it in the inferred mask but does not close it
    assert png[70, 150] == 0 and png[62, 150] == 128
    meta = json.loads((tmp_path / "tissue.json").read_text())
    assert meta["holes"] == result.holes
