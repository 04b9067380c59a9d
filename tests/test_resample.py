import numpy as np

from wsi_pipeline.io.plain_image import PlainImageSlide
from wsi_pipeline.resample import resize_labels, resize_rgb, scaled_size


def test_slide_tiles_are_resampled_by_resize_rgb(tmp_path) -> None:
    """The engine and the training data share one resampling: a 0.5 µm/px image read at
    0.25 µm/px through the slide reader equals resize_rgb away from the borders (where the
    reader sees white outside the image and resize_rgb clamps)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    slide = PlainImageSlide(tmp_path / "x.png", mpp=0.5)
    engine = slide.read_region_at_mpp(0, 0, (96, 80), 0.25)
    ours = resize_rgb(img, (96, 80))
    assert engine.shape == ours.shape == (80, 96, 3)
    inner = (slice(6, -6), slice(6, -6))
    assert np.abs(engine[inner].astype(int) - ours[inner].astype(int)).max() <= 1


def test_labels_resample_on_the_same_grid() -> None:
    lab = np.zeros((10, 10), np.int32)
    lab[2:4, 6:8] = 7
    up = resize_labels(lab, scaled_size(lab.shape, 2.0))
    assert up.shape == (20, 20) and up.dtype == np.int32
    assert set(np.unique(up)) == {0, 7}
    rows, cols = np.nonzero(up == 7)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 7, 12, 15)
