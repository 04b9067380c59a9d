"""The one relabel function: same result on dense, sparse, float and contiguous id maps."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.labels import relabel


def _reference(inst: np.ndarray) -> np.ndarray:
    ids = np.unique(inst)
    return np.searchsorted(np.union1d([0], ids), inst).astype(np.int32)


@pytest.mark.parametrize("ids", [(0, 3, 7, 12), (0, 5, 2**31 - 1), (1, 2, 3), (0,), (0, 1, 2)])
def test_relabel_matches_sorted_ranks(ids):
    rng = np.random.default_rng(0)
    inst = rng.choice(np.array(ids, np.int64), size=(9, 11))
    out = relabel(inst)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, _reference(inst))


def test_relabel_contiguous_input_is_not_copied_and_floats_are_accepted():
    inst = np.array([[0, 1], [2, 2]], np.int32)
    assert relabel(inst) is inst
    np.testing.assert_array_equal(relabel(np.array([[0.0, 4.0], [9.0, 4.0]])), [[0, 1], [2, 1]])
    assert relabel(np.zeros((0, 3), np.int64)).shape == (0, 3)


def test_relabel_rejects_negative_and_fractional_ids():
    with pytest.raises(ValueError, match=">= 0"):
        relabel(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match="integers"):
        relabel(np.array([[0.5, 2.0]]))
