"""Tissue detection: real slides, constructed cases with µm-sized clean-up, empty slides."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from wsi_pipeline.io import open_slide
from wsi_pipeline.tissue import TissueConfig, detect_tissue, save_tissue

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
