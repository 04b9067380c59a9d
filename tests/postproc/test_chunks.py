"""`postproc.chunks.foreground_box`: segmenting only a window's foreground box is exact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from tests.helpers.maps_synth import consep_mosaic, oracle_maps
from wsi_pipeline.postproc import segment_instances
from wsi_pipeline.postproc.chunks import foreground_box
from wsi_pipeline.postproc.config import PostprocConfig


def _noisy_window(shared_data, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real CoNSeP nuclei off-centre in a larger empty window, with maps blurred and noisy as a
    network's are (probabilities between 0 and 1, HV maps that do not fall only at borders)."""
    inst, types = consep_mosaic(shared_data / "consep_patches" / "train", 2, start=7)
    maps = oracle_maps(inst, types)
    rng = np.random.default_rng(seed)
    h, w = 900, 1000
    r0, c0 = 150, 300
    ns = np.zeros((h, w), np.float32)
    hv = np.zeros((2, h, w), np.float32)
    nc = np.zeros((maps["nc"].shape[0], h, w), np.float32)
    nc[0] = 1.0
    win = np.s_[r0 : r0 + inst.shape[0], c0 : c0 + inst.shape[1]]
    ns[win] = np.clip(ndi.gaussian_filter(maps["ns"].astype(np.float32), 1.5)
                      + rng.normal(0, 0.08, inst.shape), 0, 1)
    for k in range(2):
        hv[k][win] = np.clip(ndi.gaussian_filter(maps["hv"][k].astype(np.float32), 1.0)
                             + rng.normal(0, 0.05, inst.shape), -1, 1)
    for k in range(nc.shape[0]):
        nc[k][win] = maps["nc"][k] / 255.0
    return ns, hv, nc


@pytest.mark.parametrize("sigma_um", [0.0, 0.5])
def test_segmenting_the_foreground_box_equals_segmenting_the_window(shared_data, sigma_um):
    ns, hv, nc = _noisy_window(shared_data, seed=1)
    cfg = PostprocConfig(hv_smooth_sigma_um=sigma_um)
    box = foreground_box(ns, cfg, 0.25)
    assert box is not None
    assert (box[0].stop - box[0].start) * (box[1].stop - box[1].start) < 0.5 * ns.size
    whole = segment_instances(ns, hv, nc, mpp=0.25, config=cfg)
    part = segment_instances(ns[box], hv[(slice(None), *box)], nc[(slice(None), *box)],
                             mpp=0.25, config=cfg)
    embedded = np.zeros_like(whole.inst_map)
    embedded[box] = part.inst_map
    assert whole.n > 100
    np.testing.assert_array_equal(embedded, whole.inst_map)
    np.testing.assert_array_equal(part.types, whole.types)
    np.testing.assert_array_equal(part.type_probs, whole.type_probs)


def test_a_window_without_foreground_has_no_box():
    ns = np.full((64, 64), 0.39, np.float32)
    assert foreground_box(ns, PostprocConfig(ns_threshold=0.4), 0.25) is None
    ns[10, 60] = 0.4
    rows, cols = foreground_box(ns, PostprocConfig(ns_threshold=0.4), 0.25)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (6, 15, 56, 64)
