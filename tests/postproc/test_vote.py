"""postproc/vote.py: each instance's type is its pixels' majority vote; probabilities are means."""

from __future__ import annotations

import numpy as np

from wsi_pipeline.postproc.vote import vote_types


def _probs(inst: np.ndarray, per_pixel: dict[tuple[int, int], tuple[float, ...]], n_cls: int,
           default: tuple[float, ...]) -> np.ndarray:
    p = np.zeros((n_cls, *inst.shape), np.float32)
    p[:] = np.asarray(default, np.float32)[:, None, None]
    for (r, c), v in per_pixel.items():
        p[:, r, c] = v
    return p


def test_majority_of_pixels_wins_over_the_most_confident_few():
    inst = np.zeros((1, 8), np.int32)
    inst[0, :] = 1
    strong = {(0, c): (0.05, 0.9, 0.05) for c in range(3)}  # 3 pixels sure of class 1
    weak = (0.25, 0.35, 0.4)  # 5 pixels lean to class 2
    types, probs = vote_types(inst, 1, _probs(inst, strong, 3, weak))
    assert types.tolist() == [2]
    np.testing.assert_allclose(probs[0], [(3 * 0.05 + 5 * 0.25) / 8, (3 * 0.9 + 5 * 0.35) / 8,
                                          (3 * 0.05 + 5 * 0.4) / 8], rtol=1e-6)
    assert probs[0, 1] > probs[0, 2]  # the mean would have said class 1: the vote is what counts


def test_background_votes_are_ignored_and_all_background_falls_back_to_the_mean():
    inst = np.array([[1, 1, 1, 2, 2]], np.int32)
    p = _probs(inst, {(0, 0): (0.1, 0.2, 0.7)}, 3, (0.6, 0.3, 0.1))
    types, probs = vote_types(inst, 2, p)
    # instance 1: two background votes, one for class 2 -> class 2; instance 2: only background
    # votes -> the foreground class with the highest mean (class 1)
    assert types.tolist() == [2, 1]
    assert probs.dtype == np.float32 and probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_without_type_maps_or_with_one_class():
    inst = np.array([[0, 1, 2]], np.int32)
    types, probs = vote_types(inst, 2, None)
    assert types.tolist() == [0, 0] and probs.shape == (2, 0)
    types, probs = vote_types(inst, 2, np.ones((1, 1, 3), np.float32))
    assert types.tolist() == [0, 0] and probs.tolist() == [[1.0], [1.0]]


def test_ids_follow_the_label_order():
    inst = np.array([[2, 2, 0, 1]], np.int32)
    p = np.zeros((3, 1, 4), np.float32)
    p[:, 0, 0] = p[:, 0, 1] = (0.0, 0.0, 1.0)
    p[:, 0, 3] = (0.0, 1.0, 0.0)
    types, _ = vote_types(inst, 2, p)
    assert types.tolist() == [1, 2]  # row k is id k + 1
