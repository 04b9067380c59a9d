"""postproc/edges.py: the HV edge map marks borders between nuclei, not the nucleus rim."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_pipeline.datasets.targets import hv_maps
from wsi_pipeline.postproc.edges import _masked_derivative, _smooth_inside, hv_edges


def _two_touching() -> np.ndarray:
    inst = np.zeros((24, 40), np.int32)
    inst[6:18, 6:20] = 1
    inst[6:18, 20:34] = 2  # shares the border between columns 19 and 20
    return inst


def test_border_between_touching_nuclei_is_the_strongest_edge():
    inst = _two_touching()
    mask = inst > 0
    edges = hv_edges(hv_maps(inst), mask)
    assert edges.dtype == np.float32 and edges.shape == inst.shape
    assert np.all(edges[~mask] == 0)
    border = edges[8:16, 19:21].min()
    assert border > 0.5  # H falls from +1 to -1 across the border
    inside = np.ones_like(mask)
    inside[:, 18:22] = False
    # elsewhere (the outer rim included: no difference is taken to the background) it is small
    assert edges[mask & inside].max() < 0.1 * border


def test_a_lone_nucleus_has_no_border():
    inst = np.zeros((20, 20), np.int32)
    inst[4:16, 5:15] = 1
    edges = hv_edges(hv_maps(inst), inst > 0)
    assert edges.max() < 0.05


def test_transposed_input_gives_the_transposed_map():
    inst = _two_touching()
    hv = hv_maps(inst)
    mask = inst > 0
    edges = hv_edges(hv, mask, sigma_px=1.0)
    hv_t = np.stack([hv[1].T, hv[0].T])  # x and y swap roles
    np.testing.assert_allclose(hv_edges(hv_t, mask.T, sigma_px=1.0), edges.T, atol=1e-6)


def test_smoothing_stays_inside_the_mask():
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    f = np.where(mask, 0.7, 0.0).astype(np.float32)
    out = _smooth_inside(f, mask, 2.0)
    assert np.all(out[~mask] == 0)
    np.testing.assert_allclose(out[mask], 0.7, rtol=1e-5)  # background zeros do not bleed in
    assert _smooth_inside(f, mask, 0.0) is f


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_background_only_gives_zero(sigma):
    hv = np.random.default_rng(0).normal(size=(2, 10, 12)).astype(np.float32)
    assert not hv_edges(hv, np.zeros((10, 12), bool), sigma).any()


def _masked_derivative_by_padding(f: np.ndarray, mask: np.ndarray, axis: int) -> np.ndarray:
    """The earlier np.take/np.pad formulation, kept as the reference for the bits."""
    d = np.diff(f, axis=axis)
    n = f.shape[axis]
    valid = np.take(mask, range(n - 1), axis) & np.take(mask, range(1, n), axis)
    d = np.where(valid, d, 0.0)
    after = [(0, 0)] * f.ndim
    before = [(0, 0)] * f.ndim
    after[axis], before[axis] = (0, 1), (1, 0)
    count = np.pad(valid, after).astype(np.float32) + np.pad(valid, before)
    return (np.pad(d, after) + np.pad(d, before)) / np.maximum(count, 1.0)


@pytest.mark.parametrize("axis", [0, 1])
def test_masked_derivative_same_bits_as_padding(axis):
    rng = np.random.default_rng(axis)
    f = rng.normal(size=(37, 53)).astype(np.float32)
    f[rng.random(f.shape) < 0.05] = -0.0  # signed zeros must come out as before too
    mask = rng.random(f.shape) < 0.7
    got = _masked_derivative(f, mask, axis)
    want = _masked_derivative_by_padding(f, mask, axis)
    assert got.dtype == want.dtype == np.float32
    assert got.tobytes() == want.tobytes()
