"""Per-instance type: majority vote of pixel labels, plus the mean class probabilities."""

from __future__ import annotations

import numpy as np


def vote_types(
    inst_map: np.ndarray, n_inst: int, type_prob: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(types (N,), type_probs (N, C))`` for contiguous ids 1..N.

    Each pixel votes for its most probable class; background votes are ignored, so an
    instance is typed by what most of its nucleus pixels say (patent step S5). An instance
    whose every pixel prefers background falls back to its most probable foreground class by
    mean probability. ``type_probs`` is the mean softmax of every class (background included)
    over the instance's pixels — a per-class probability, not only the vote share.
    Without ``type_prob`` all types are 0 and ``type_probs`` has zero columns.
    """
    if type_prob is None:
        return np.zeros(n_inst, np.int32), np.zeros((n_inst, 0), np.float32)
    n_cls = type_prob.shape[0]
    labels = inst_map.ravel()
    fg = labels > 0
    lab = labels[fg].astype(np.int64) - 1
    probs = type_prob.reshape(n_cls, -1)[:, fg].astype(np.float64)
    area = np.bincount(lab, minlength=n_inst).astype(np.float64)
    sums = np.stack([np.bincount(lab, weights=p, minlength=n_inst) for p in probs], axis=1)
    mean = sums / np.maximum(area, 1.0)[:, None]
    if n_cls == 1:
        return np.zeros(n_inst, np.int32), mean.astype(np.float32)
    winner = np.argmax(probs, axis=0)
    votes = np.bincount(lab * n_cls + winner, minlength=n_inst * n_cls).reshape(n_inst, n_cls)
    fg_votes = votes[:, 1:]
    types = 1 + np.argmax(fg_votes, axis=1)
    no_vote = fg_votes.sum(axis=1) == 0
    types[no_vote] = 1 + np.argmax(mean[no_vote, 1:], axis=1)
    return types.astype(np.int32), mean.astype(np.float32)
