"""`finetune-types` on a real slide with a QuPath export the test writes: a new class list
replaces the type head, segmentation stays bit for bit the starting weights'."""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from tests.datasets.test_qupath_geojson import _feature, write_export
from wsi_pipeline.cli import main
from wsi_pipeline.model.checkpoint import default_checkpoint_path, load_checkpoint


@pytest.mark.slow
def test_new_classes_from_qupath_points_leave_segmentation_bit_for_bit(shared_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(shared_data / "slides" / "CMU-1-Small-Region.svs", data / "CMU.svs")
    points = [_feature({"type": "Point", "coordinates": [700.0 + 37 * i, 900.0 + 41 * (i % 7)]},
                       "Tumor" if i % 3 else "Immune cells") for i in range(30)]
    write_export(data / "CMU.geojson", points)
    (tmp_path / "map.yaml").write_text("Tumor: tumour\nImmune cells: immune\n")
    result = CliRunner().invoke(main, [
        "finetune-types", str(data), "-o", str(tmp_path / "run"), "--classes", "tumour,immune",
        "--class-map", str(tmp_path / "map.yaml"), "--epochs", "1", "--samples-per-epoch", "4",
        "--batch-size", "2", "--max-steps-per-epoch", "2", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "held-out mean F1" in result.output and "best.pt" in result.output
    tuned = load_checkpoint(tmp_path / "run" / "best.pt")
    assert tuned.class_names == ("background", "tumour", "immune")
    start = load_checkpoint(default_checkpoint_path()).net.state_dict()
    for name, value in tuned.net.state_dict().items():
        if name.startswith("decoders.nc."):
            continue
        assert torch.equal(value, start[name]), name  # NS, HV, encoders, attention: untouched
    assert tuned.net.state_dict()["decoders.nc.head.weight"].shape[0] == 3


def test_qupath_classes_that_are_not_model_classes_need_a_map(shared_data, tmp_path):
    shutil.copy(shared_data / "slides" / "CMU-1-Small-Region.svs", tmp_path / "CMU.svs")
    write_export(tmp_path / "CMU.geojson", [_feature({"type": "Point", "coordinates": [5.0, 5.0]}, "Tumor")])
    result = CliRunner().invoke(main, ["finetune-types", str(tmp_path), "-o", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert "QuPath classes ['Tumor'] are not model classes" in result.output
    assert "--class-map" in result.output and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_model_class_names_as_they_are_keep_the_head(shared_data, tmp_path):
    """The recipe's default: a corrected nuclei.geojson.gz names the model's own classes, no map
    and no new class list; the point set then takes the starting weights' classes."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(shared_data / "slides" / "CMU-1-Small-Region.svs", data / "CMU.svs")
    points = [_feature({"type": "Point", "coordinates": [700.0 + 37 * i, 1900.0 + 41 * (i % 7)]},
                       ("epithelial", "spindle", "inflammatory")[i % 3]) for i in range(30)]
    write_export(data / "CMU.geojson", points)
    result = CliRunner().invoke(main, [
        "finetune-types", str(data), "-o", str(tmp_path / "run"), "--epochs", "1",
        "--samples-per-epoch", "4", "--batch-size", "2", "--max-steps-per-epoch", "2",
        "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    tuned = load_checkpoint(tmp_path / "run" / "best.pt")
    assert tuned.class_names == load_checkpoint(default_checkpoint_path()).class_names
