"""`wsi-pipeline convert` from the new layouts, with resampling to the model's pixel size."""

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from wsi_pipeline.cli import main
from wsi_pipeline.datasets.common import read_common


def test_convert_cpm15_to_the_model_scale(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cpm"
    res = CliRunner().invoke(main, ["convert", "--format", "cpm15", "--target-mpp", "0.25",
                                    str(shared_data / "cpm15"), str(out)])
    assert res.exit_code == 0, res.output
    samples = {s.name: s for s in read_common(out)}
    assert len(samples) == 13 and all(s.mpp == 0.25 for s in samples.values())
    assert samples["image01"].image.shape == (976, 1286, 3)  # 643x488 at 20x, x2
    assert samples["image08"].image.shape == (596, 798, 3)  # 40x: unchanged


def test_convert_coco_typed_and_option_errors(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pn"
    res = CliRunner().invoke(main, ["convert", "--format", "coco", "--typed",
                                    str(shared_data / "pannuke_breast"), str(out)])
    assert res.exit_code == 0, res.output
    samples = read_common(out)
    assert samples[0].class_names == ("background", "Neoplastic", "No-neoplastic")
    assert sum(int(np.unique(s.type_map).size > 1) for s in samples) == 25
    res = CliRunner().invoke(main, ["convert", "--format", "cpm15", "--typed",
                                    str(shared_data / "cpm15"), str(tmp_path / "x")])
    assert res.exit_code != 0 and "--typed applies to --format coco only" in res.output
