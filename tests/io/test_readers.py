"""Slide readers: real slides, a synthetic pyramid through OpenSlide, plain images, resampling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_pipeline.io import MissingMppError, SlideReadError, open_slide
from wsi_pipeline.io.openslide_reader import OpenSlideSlide, mpp_from_properties
from wsi_pipeline.io.plain_image import PlainImageSlide

LEVEL_COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def write_pyramid(path, size=(1024, 768), mpp=0.5, colours=LEVEL_COLOURS):
    """Tiled pyramidal TIFF (tifffile recipe OpenSlide reads as generic-tiff); one colour per level."""
    w, h = size
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level, colour in enumerate(colours):
            ds = 2**level
            img = np.empty((h // ds, w // ds, 3), np.uint8)
            img[:] = colour
            tif.write(img, tile=(256, 256), compression="jpeg", photometric="rgb",
                      resolution=(1e4 / (mpp * ds), 1e4 / (mpp * ds)), resolutionunit="CENTIMETER",
                      subfiletype=1 if level else 0, metadata=None)


def test_cmu_single_level_with_mpp(shared_data):
    with open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs") as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.dimensions == (2220, 2967)
        assert len(slide.level_dimensions) == 1
        assert slide.mpp == pytest.approx(0.499)
        tile = slide.read_region_at_mpp(1000, 1200, (256, 256), 0.25)
        assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
        assert tile.std() > 10  # tissue, not blank
        thumb = slide.thumbnail_at_mpp(8.0)
        assert thumb.shape == (186, 139, 3)


def test_tcga_without_mpp_names_the_file(shared_data):
    path = shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with open_slide(path) as slide:
        assert len(slide.level_dimensions) == 2
        with pytest.raises(MissingMppError, match="tcga-cr-7395-01a-01-ts1.svs"):
            _ = slide.mpp
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5
        assert slide.best_level_for_downsample(2.0) == 1  # stored downsample 2.0005
        assert slide.best_level_for_downsample(1.9) == 0
        region = slide.read_region_at_mpp(2000, 1500, (128, 96), 1.0)  # JPEG 2000 level 1
        assert region.shape == (96, 128, 3) and region.std() > 5


def test_synthetic_pyramid_opens_in_openslide_and_reads_best_level(tmp_path):
    path = tmp_path / "pyramid.tif"
    write_pyramid(path, mpp=0.5)
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert len(slide.level_dimensions) == 3
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        # each level has its own colour, so the colour tells which level was read
        for target_mpp, level in [(0.25, 0), (0.5, 0), (0.9, 0), (1.0, 1), (1.9, 1), (2.0, 2), (8.0, 2)]:
            region = slide.read_region_at_mpp(100, 100, (32, 32), target_mpp)
            mean = region.reshape(-1, 3).mean(0)
            assert np.abs(mean - LEVEL_COLOURS[level]).max() < 12, (target_mpp, mean)


def test_resampling_geometry_on_a_ramp():
    """Map pixel c covers level-0 [x0 + c*s, x0 + (c+1)*s): its centre value is known on a ramp.

    Level-0 pixel i holds 2*i exactly, so the resampled value at a point is twice its level-0
    pixel coordinate (interpolation is exact on a linear ramp) up to uint8 rounding. Averaged
    over sub-pixel phases of x0 the rounding cancels, so a centre half a pixel off at either
    resolution (a systematic shift of >= 0.25 level-0 px, i.e. >= 0.5 in value) fails.
    """
    w = 128
    ramp = np.tile((2 * np.arange(w))[None, :, None], (50, 1, 3)).astype(np.uint8)
    slide = PlainImageSlide("ramp.png", mpp=0.5, pixels=ramp)
    for target, n in [(0.25, 100), (0.4, 100), (1.0, 50), (2.0, 25)]:
        s = target / 0.5
        errors = []
        for x0 in 7.0 + (np.arange(8) + 0.5) / 8:  # no rounding ties
            out = slide.read_region_at_mpp(x0, 10, (n, 4), target)[2, 2:-2, 0].astype(float)
            centres = x0 + (np.arange(n) + 0.5) * s - 0.5  # level-0 pixel coordinate of each centre
            errors.append(out - 2 * centres[2:-2])
        err = np.concatenate(errors)
        assert np.abs(err).max() <= 0.51, (target, err)
        assert abs(err.mean()) < 0.1, (target, err.mean())


def test_plain_image_needs_mpp_and_reads_white_outside(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.full((40, 60, 3), 100, np.uint8)).save(path)
    with open_slide(path) as slide:
        assert isinstance(slide, PlainImageSlide) and slide.dimensions == (60, 40)
        with pytest.raises(MissingMppError, match="tile.png"):
            _ = slide.mpp
    with open_slide(path, mpp=0.25) as slide:
        region = slide.read_region_at_mpp(-10, -10, (30, 30), 0.25)
        assert (region[:10] == 255).all() and (region[10:, 10:] == 100).all()


def test_striped_tiff_falls_back_to_plain_image(tmp_path):
    path = tmp_path / "striped.tif"
    tifffile.imwrite(path, np.full((64, 80, 3), 77, np.uint8), photometric="rgb")
    with open_slide(path, mpp=0.5) as slide:
        assert isinstance(slide, PlainImageSlide)
        assert slide.read_region_at_mpp(0, 0, (8, 8), 0.5).mean() == 77


def test_unreadable_files_raise_slide_read_error(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"not a slide at all")
    with pytest.raises(SlideReadError, match="broken.svs"):
        open_slide(bad)
    with pytest.raises(SlideReadError, match="no such file"):
        open_slide(tmp_path / "missing.svs")
    png = tmp_path / "broken.png"
    png.write_bytes(b"\x89PNG garbage")
    with pytest.raises(SlideReadError, match="broken.png"):
        open_slide(png, mpp=0.25)


def test_mpp_fallbacks(tmp_path, caplog):
    assert mpp_from_properties({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25"}, tmp_path) == 0.25
    tiff = {"tiff.ResolutionUnit": "centimeter", "tiff.XResolution": "40000"}
    assert mpp_from_properties(tiff, tmp_path) == pytest.approx(0.25)
    with caplog.at_level(logging.WARNING):
        assert mpp_from_properties({"openslide.objective-power": "20"}, tmp_path) == pytest.approx(0.5)
    assert "objective power" in caplog.text
    assert mpp_from_properties({"tiff.ResolutionUnit": "inch"}, tmp_path) is None


def test_tiatoolbox_backend_is_optional(tmp_path):
    try:
        import tiatoolbox  # noqa: F401
    except ImportError:
        path = tmp_path / "x.png"
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
        with pytest.raises(ImportError, match=r"wsi-pipeline\[tiatoolbox\]"):
            open_slide(path, reader="tiatoolbox")
    else:
        pytest.skip("tiatoolbox installed: the missing-extra error cannot be shown")


def test_bad_mpp_rejected(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(ValueError):
        open_slide(path, mpp=0)
