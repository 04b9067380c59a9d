import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_pipeline.datasets.imagej_roi import read_cryonuseg
from wsi_pipeline.datasets.validate import SampleError


def _roiset(outlines: list[np.ndarray]) -> bytes:
    from roifile import ImagejRoi

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, xy in enumerate(outlines):
            z.writestr(f"{i:04d}.roi", ImagejRoi.frompoints(xy).tobytes())
    return buf.getvalue()


def test_real_cryonuseg(shared_data: Path) -> None:
    samples = read_cryonuseg(shared_data / "cryonuseg")
    assert [s.name for s in samples] == ["TCGA-DE-A4MA", "TCGA-S4-A8RO"]
    assert all(s.image.shape == (512, 512, 3) and s.mpp == 0.25 for s in samples)
    s = samples[1]
    assert s.meta["rois"] == 117 and int(s.inst_map.max()) == 117 - s.meta["dropped_rois"]
    grey = s.image.mean(axis=2)
    assert grey[s.inst_map > 0].mean() < grey[s.inst_map == 0].mean() - 20


def test_cryonuseg_folder_and_zip_layouts(tmp_path: Path) -> None:
    square = np.array([[2, 2], [9, 2], [9, 9], [2, 9]])
    img = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img, format="TIFF")
    with zipfile.ZipFile(tmp_path / "tile.zip", "w") as z:
        z.writestr("tile.tif", img.getvalue())
        z.writestr("RoiSet.zip", _roiset([square, square + 4]))
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "f.tif").write_bytes(img.getvalue())
    (folder / "RoiSet.zip").write_bytes(_roiset([square]))
    a, b = read_cryonuseg(tmp_path)
    assert a.name == "tile" and int(a.inst_map.max()) == 2 and a.inst_map[8, 8] == 2
    assert b.name == "f" and int(b.inst_map.max()) == 1
    (folder / "RoiSet.zip").write_bytes(b"not a zip")
    with pytest.raises(SampleError, match="f: RoiSet.zip is not a zip archive"):
        read_cryonuseg(tmp_path)
