"""The QuPath GeoJSON format: detections QuPath imports, or cell objects."""

from __future__ import annotations

import gzip
import json

from wsi_pipeline.export.config import ExportConfig
from wsi_pipeline.export.formats.base import output_format
from wsi_pipeline.export.geojson import qupath_problems


def _features(path):
    return json.loads(gzip.decompress(path.read_bytes()))["features"]


def test_geojson_detections_with_classes_and_measurements(nuclei, tmp_path):
    path = tmp_path / "t.geojson.gz"
    n = output_format("geojson").write(nuclei, path)
    features = _features(path)
    assert len(features) == n == int(nuclei.labels.max())
    f0 = features[0]
    assert f0["geometry"]["type"] == "Polygon" and f0["properties"]["objectType"] == "detection"
    assert f0["properties"]["classification"]["name"] in nuclei.class_names[1:]
    assert f0["properties"]["measurements"]["area_um2"] > 0
    assert f0["properties"]["name"] == "1" and "nucleus_id" not in f0["properties"]["measurements"]
    assert qupath_problems(path) == []


def test_geojson_cells_with_the_configured_expansion(nuclei, tmp_path):
    path = tmp_path / "c.geojson.gz"
    output_format("geojson", ExportConfig(geojson_cells=True, cell_expansion_um=2.0)).write(nuclei, path)
    f0 = _features(path)[0]
    assert f0["properties"]["objectType"] == "cell" and "nucleusGeometry" in f0["properties"]
    assert qupath_problems(path) == []
