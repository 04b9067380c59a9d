"""QuPath GeoJSON exports on a real slide become point-labelled crops read by the engine's reader."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from wsi_pipeline.datasets import SampleError
from wsi_pipeline.datasets.qupath_geojson import read_labels, read_qupath_geojson
from wsi_pipeline.io import open_slide


def _feature(geometry, cls=None, object_type="annotation", **props):
    properties = {"objectType": object_type, **props}
    if cls is not None:
        properties["classification"] = {"name": cls, "color": [255, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _square(x, y, r=4.0):
    return {"type": "Polygon", "coordinates": [[[x - r, y - r], [x + r, y - r], [x + r, y + r],
                                                [x - r, y + r], [x - r, y - r]]]}


FEATURES = [
    _feature({"type": "Point", "coordinates": [1000.0, 1200.0]}, "Tumor"),
    _feature({"type": "MultiPoint", "coordinates": [[1010.0, 1210.0], [1500.0, 300.0]]}, "Immune cells"),
    _feature(_square(1100, 1250), "Tumor", "detection"),
    _feature(_square(1200, 1250, 20), "Immune cells", "cell", nucleusGeometry=_square(1190, 1240)),
    _feature({"type": "Point", "coordinates": [1020.0, 1220.0]}),          # unclassified: skipped
    _feature(_square(1000, 1000, 300), "Tumor", "annotation"),              # a region: skipped
]


def write_export(path, features=FEATURES):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture
def slide_dir(shared_data, tmp_path):
    shutil.copy(shared_data / "slides" / "CMU-1-Small-Region.svs", tmp_path / "CMU.svs")
    return tmp_path


def test_labels_of_points_detections_and_cells(tmp_path):
    xy, names = read_labels(write_export(tmp_path / "a.geojson"))
    assert names == ["Tumor", "Immune cells", "Immune cells", "Tumor", "Immune cells"]
    assert xy.tolist() == [[1000, 1200], [1010, 1210], [1500, 300], [1100, 1250], [1190, 1240]]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not readable GeoJSON"),
    ('{"type": "Topology"}', "expected a FeatureCollection"),
    (json.dumps([_feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "Tumor")]),
     "feature 0: a LineString is not a nucleus label"),
    (json.dumps([_feature({"type": "Point", "coordinates": [1, 1]})]), "no classified points"),
])
def test_broken_exports_are_named(tmp_path, content, message):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"bad.geojson: {message}"):
        read_labels(path)


def test_crops_hold_the_points_where_the_engine_reads_them(slide_dir):
    with gzip.open(slide_dir / "CMU.geojson.gz", "wt") as f:  # the pipeline's own export is gzipped
        json.dump({"type": "FeatureCollection", "features": FEATURES}, f)
    samples = read_qupath_geojson(slide_dir, mpp=0.25, crop_um=64.0)
    assert {s.class_names for s in samples} == {("background", "Immune cells", "Tumor")}
    assert sum(len(s.points) for s in samples) == 5
    with open_slide(slide_dir / "CMU.svs") as slide:
        scale = 0.25 / slide.mpp
        for s in samples:
            x0, y0 = s.meta["level0_xy"]
            h, w = s.image.shape[:2]
            assert (h, w) == (256, 256) and s.mpp == 0.25 and s.group == "CMU"
            assert np.array_equal(s.image, slide.read_region_at_mpp(x0, y0, (w, h), 0.25))
            # a point's crop pixel, back in level 0, is the exported coordinate
            level0 = (s.points[:, [1, 0]] + 0.5) * scale - 0.5 + [x0, y0]
            xy, _ = read_labels(slide_dir / "CMU.geojson.gz")
            assert all(np.abs(xy - p).sum(axis=1).min() < 1e-6 for p in level0)


def test_a_point_outside_the_slide_is_named(slide_dir):
    write_export(slide_dir / "CMU.geojson", [_feature({"type": "Point", "coordinates": [99999.0, 5.0]}, "T")])
    with pytest.raises(SampleError, match=r"CMU.svs \+ CMU.geojson: .*outside"):
        read_qupath_geojson(slide_dir)
    assert read_qupath_geojson(slide_dir, on_error="skip") == []
