"""The HoVer-Net .mat format: what HoVer-Net's and our evaluation read back."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio

from wsi_pipeline.export.formats import FormatError
from wsi_pipeline.export.formats.base import Nuclei, output_format


def test_mat_holds_the_label_map_types_probabilities_and_provenance(nuclei, tmp_path):
    n = output_format("mat").write(nuclei, tmp_path / "t.mat")
    mat = sio.loadmat(tmp_path / "t.mat")
    assert n == int(nuclei.labels.max())
    np.testing.assert_array_equal(mat["inst_map"], nuclei.labels)
    types = np.concatenate([b.column("type_id").to_numpy() for b in nuclei.read(["type_id"])])
    np.testing.assert_array_equal(mat["inst_type"].ravel(), types)
    np.testing.assert_allclose(mat["inst_type_prob"], nuclei.type_probs)
    np.testing.assert_array_equal(mat["inst_uid"].ravel(), np.arange(1, n + 1))
    ys, xs = np.nonzero(nuclei.labels == 1)
    np.testing.assert_allclose(mat["inst_centroid"][0], [xs.mean(), ys.mean()], atol=1e-6)
    assert mat["model_sha256"][0] == "ab" * 32


def test_mat_is_refused_for_a_slide_by_name(nuclei, tmp_path):
    slide = Nuclei(**{**nuclei.__dict__, "labels": None, "source_id": "slide-7"})
    with pytest.raises(FormatError, match="mat format .* needs the label map.*slide-7"):
        output_format("mat").write(slide, tmp_path / "s.mat")
    assert not (tmp_path / "s.mat").exists()
