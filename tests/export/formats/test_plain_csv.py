"""The plain CSV format: one row per nucleus, every table column but the outline, for R/Excel."""

from __future__ import annotations

import numpy as np
import pandas as pd

from wsi_pipeline.export.formats.base import output_format


def test_csv_has_a_row_per_nucleus_with_centroid_and_measurements(nuclei, tmp_path):
    path = tmp_path / "t.csv"
    n = output_format("csv").write(nuclei, path)
    got = pd.read_csv(path)
    want = pd.concat(b.to_pandas() for b in nuclei.read(None))
    assert len(got) == n == len(want)
    assert list(got.columns) == [c for c in want.columns if c not in ("geometry", "bbox")]
    assert {"nucleus_id", "x", "y", "area_um2", "type_name", "type_prob"} <= set(got.columns)
    for column in ("x", "y", "area_um2", "type_prob"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-6, err_msg=column)
    assert (got["type_name"] == want["type_name"]).all()


def test_empty_image_gives_a_header_only(nuclei, tmp_path):
    empty = nuclei.__class__.from_table(nuclei.schema.empty_table(), source_id="glass",
                                        class_names=nuclei.class_names,
                                        class_colors=nuclei.class_colors, level0_mpp=0.25)
    path = tmp_path / "e.csv"
    assert output_format("csv").write(empty, path) == 0
    assert path.read_text().count("\n") == 1 and path.read_text().startswith('"nucleus_id"')
