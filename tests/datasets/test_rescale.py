from pathlib import Path

import numpy as np
from skimage.draw import disk

from wsi_pipeline.datasets.cpm15 import read_cpm15
from wsi_pipeline.datasets.rescale import to_mpp
from wsi_pipeline.datasets.sample import Sample


def _sample(mpp: float | None) -> Sample:
    inst = np.zeros((40, 50), np.int32)
    inst[disk((20, 25), 6)] = 1
    inst[disk((8, 8), 3)] = 2
    image = np.where(inst[..., None] > 0, 60, 220).astype(np.uint8).repeat(3, axis=2)
    return Sample("s", image, inst, (inst > 0).astype(np.int32), ("background", "n"), mpp)


def test_20x_sample_is_upsampled_twice_with_labels_on_the_same_grid() -> None:
    s = to_mpp(_sample(0.5), 0.25)
    assert s.image.shape == (80, 100, 3) and s.inst_map.shape == s.type_map.shape == (80, 100)
    assert s.mpp == 0.25 and s.meta["source_mpp"] == 0.5
    assert int(s.inst_map.max()) == 2
    area = np.bincount(s.inst_map.ravel())[1:]
    original = np.bincount(_sample(0.5).inst_map.ravel())[1:]
    assert np.allclose(area, 4 * original, rtol=0.1)  # areas in px ×4: the same µm²
    dark = s.image.mean(axis=2) < 140
    assert ((s.inst_map > 0) == dark).mean() > 0.98


def test_same_scale_and_unknown_mpp_are_left_alone() -> None:
    for mpp in (0.2527, None):
        s = _sample(mpp)
        assert to_mpp(s, 0.25) is s


def test_real_cpm15_20x_images_reach_the_model_scale(shared_data: Path) -> None:
    first = read_cpm15(shared_data / "cpm15")[0]
    s = to_mpp(first, 0.25)
    assert s.image.shape[:2] == (2 * first.image.shape[0], 2 * first.image.shape[1])
    # the median nucleus is ~4x as many pixels at 0.25 as at 0.5 µm/px
    before = np.median(np.bincount(first.inst_map.ravel())[1:])
    after = np.median(np.bincount(s.inst_map.ravel())[1:])
    assert 3.5 < after / before < 4.5
