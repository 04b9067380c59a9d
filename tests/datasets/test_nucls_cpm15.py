from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.datasets.cpm15 import read_cpm15, read_mask_txt
from wsi_pipeline.datasets.nucls import read_nucls
from wsi_pipeline.datasets.validate import SampleError


def test_real_nucls(shared_data: Path) -> None:
    samples = read_nucls(shared_data / "nucls_seg")
    assert len(samples) == 15
    assert samples[0].class_names == ("background", "Non-Tumor", "Tumor")
    train = [s for s in samples if s.meta["split"] == "train"]
    assert len(train) == 10 and sum(int(s.inst_map.max()) for s in train) == 458
    counts = np.bincount(np.concatenate([
        np.array([s.type_map[s.inst_map == i][0] for i in range(1, int(s.inst_map.max()) + 1)])
        for s in train]), minlength=3)
    assert counts[1:].tolist() == [220, 238]
    assert all(s.image.shape == (256, 256, 3) and s.inst_map.dtype == np.int32 for s in samples)
    assert len(read_nucls(shared_data / "nucls_seg", splits=("test",))) == 5


def test_real_cpm15(shared_data: Path) -> None:
    samples = read_cpm15(shared_data / "cpm15")
    ids = (1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    assert [s.name for s in samples] == [f"image{i:02d}" for i in ids]
    assert [int(s.inst_map.max()) for s in samples] == [
        351, 127, 256, 255, 292, 251, 97, 218, 68, 131, 93, 139, 137]
    s = samples[0]
    assert s.image.shape == (488, 643, 3) and s.type_map is None
    # image01-07 are 20x, image08-15 40x (challenge README)
    assert [x.mpp for x in samples] == [0.5] * 5 + [0.25] * 8


def test_cpm15_mask_order_and_bad_size(tmp_path: Path) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    mask = np.zeros((3, 5), np.int64)
    mask[0, 4] = 1  # x fastest: last value of the first row
    (folder / "image01_mask.txt").write_text("5 3\n" + "\n".join(map(str, mask.ravel())) + "\n")
    assert read_mask_txt(folder / "image01_mask.txt")[0, 4] == 1
    Image.fromarray(np.zeros((3, 5, 4), np.uint8), "RGBA").save(folder / "image01.png")
    Image.fromarray(np.zeros((5, 3, 4), np.uint8), "RGBA").save(folder / "image02.png")
    (folder / "image02_mask.txt").write_text("5 3\n" + "0\n" * 15)  # like the swapped 04/05
    with pytest.raises(SampleError, match="image02.png.*size mismatch"):
        read_cpm15(tmp_path)
    (s,) = read_cpm15(tmp_path, on_error="skip")
    assert s.name == "image01" and s.mpp is None and s.image.shape == (3, 5, 3)


def test_nucls_missing_inst_map_names_the_label_file(tmp_path: Path) -> None:
    (tmp_path / "label_map.yaml").write_text("1: Tumor\n")
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "images" / "a.png")
    np.save(tmp_path / "train" / "labels" / "a.npy", np.array({"type_map": np.zeros((8, 8))}))
    with pytest.raises(SampleError, match=r"a\.npy: no 'inst_map'"):
        read_nucls(tmp_path, splits=("train",))
