import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_pipeline.cli.convert import command as convert
from wsi_pipeline.datasets.common import read_common, write_common
from wsi_pipeline.datasets.cpm15 import read_cpm15
from wsi_pipeline.datasets.nucls import read_nucls
from wsi_pipeline.datasets.validate import SampleError


def test_convert_cpm15_untyped_round_trip(shared_data: Path, tmp_path: Path) -> None:
    dst = tmp_path / "cpm"
    result = CliRunner().invoke(convert, ["--format", "cpm15", str(shared_data / "cpm15"), str(dst)])
    assert result.exit_code == 0, result.output
    back = read_common(dst)
    orig = read_cpm15(shared_data / "cpm15")
    assert [s.name for s in back] == [s.name for s in orig]
    assert all(b.type_map is None and np.array_equal(a.inst_map, b.inst_map) and a.mpp == b.mpp
               for a, b in zip(orig, back, strict=True))
    meta = json.loads((dst / "classes.json").read_text())
    assert meta["class_names"] == ["background", "nucleus"] and meta["provenance"]["format"] == "cpm15"


def test_write_read_nucls_and_bad_label_named(shared_data: Path, tmp_path: Path) -> None:
    samples = read_nucls(shared_data / "nucls_seg", splits=("test",))
    write_common(samples, tmp_path)
    np.savez(tmp_path / "labels" / "test_2.npz", inst_map=np.zeros((10, 10), np.int32))
    with pytest.raises(SampleError, match="test_2"):
        read_common(tmp_path)
    assert len(read_common(tmp_path, on_error="skip")) == 4


def test_convert_usage_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        convert, ["--format", "cpm15", "--merge-consep", str(tmp_path), str(tmp_path / "o")])
    assert r.exit_code != 0 and "hovernet only" in r.output
    r = CliRunner().invoke(convert, ["--format", "cpm15", str(tmp_path), str(tmp_path / "o")])
    assert r.exit_code != 0 and "no image/mask pairs" in r.output


def test_convert_brca_m2c_keeps_the_point_labels(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "brca_m2c"
    root = tmp_path / "src"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    name = (src / "brca_ds_val.txt").read_text().split()[0]
    (root / "images" / name).symlink_to(src / "images" / name)
    label = f"{name[:-4]}_gt_class_coords.txt"
    (root / "labels" / label).symlink_to(src / "labels" / label)
    (root / "brca_ds_val.txt").write_text(name + "\n")
    result = CliRunner().invoke(convert, ["--format", "brca-m2c", str(root), str(tmp_path / "dst")])
    assert result.exit_code == 0, result.output
    (back,) = read_common(tmp_path / "dst")
    from wsi_pipeline.datasets import read_brca_m2c

    (orig,) = read_brca_m2c(root)
    assert np.array_equal(back.points, orig.points) and back.class_names == orig.class_names
    assert np.array_equal(back.image, orig.image)
