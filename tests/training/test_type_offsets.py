"""Type-logit offsets: fitted on labelled nuclei, they move a rare class's close calls its way
and nothing else; written into the type head they change the network's own softmax."""

from __future__ import annotations

import numpy as np
import torch

from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.model.network import MultiTaskNet
from wsi_pipeline.training.type_offsets import (
    TypeEvidence,
    add_offsets,
    fit_offsets,
    offset_objective,
)

#: per-pixel softmax (background, other, inflammatory, epithelial, spindle) of two kinds of nuclei:
#: "other" nuclei that the network calls inflammatory by a small margin, clear inflammatory ones
CLOSE_CALL = np.array([0.1, 0.35, 0.4, 0.1, 0.05])
CLEAR = np.array([0.1, 0.05, 0.7, 0.1, 0.05])


def _image(kinds: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A row of 6×6 nuclei, one per labelled class in `kinds`; (inst_map, probs, points, classes)."""
    inst = np.zeros((10, 10 * len(kinds)), np.int32)
    probs = np.zeros((5, *inst.shape), np.float32)
    probs[0] = 1.0
    for i, kind in enumerate(kinds):
        sl = (slice(2, 8), slice(10 * i + 2, 10 * i + 8))
        inst[sl] = i + 1
        probs[(slice(None), *sl)] = (CLOSE_CALL if kind == 1 else CLEAR)[:, None, None]
    points = np.array([[4.5, 10 * i + 4.5] for i in range(len(kinds))])
    return inst, probs, points, np.array(kinds)


def _evidence() -> TypeEvidence:
    ev = TypeEvidence(n_types=5)
    for name, kinds in (("a", [1, 2, 2, 2]), ("b", [1, 1, 2, 2, 2, 2])):
        inst, probs, points, classes = _image(kinds)
        ev.add(name, inst, probs, points, classes, radius=3.0)
    return ev


def test_counts_follow_the_vote_and_the_offsets():
    ev = _evidence()
    plain = ev.counts(np.zeros(5))
    assert set(plain) == {"a", "b"}
    # every "other" nucleus is voted inflammatory without offsets
    assert plain["b"].confusion_matrix(5)[1].tolist() == [0, 0, 2, 0, 0]
    assert plain["a"].scores()["recall"] == 1.0
    shifted = ev.counts(np.array([0, 0.5, 0, 0, 0]))
    assert shifted["b"].confusion_matrix(5)[1].tolist() == [0, 2, 0, 0, 0]
    assert shifted["b"].confusion_matrix(5)[2].tolist() == [0, 0, 4, 0, 0]  # clear calls stay


def test_fit_raises_the_rare_class_until_its_close_calls_turn():
    ev = _evidence()
    before = offset_objective(ev.counts(np.zeros(5)), rare_class=1)
    offsets, trail = fit_offsets(ev, rare_class=1)
    assert offsets[2] == 0.0  # the most labelled class is the anchor
    assert offsets[0] == 0.0
    assert np.log(0.4 / 0.35) < offsets[1] < np.log(0.7 / 0.05)
    after = offset_objective(ev.counts(offsets), rare_class=1)
    assert after == 1.0 > before
    assert trail[0]["objective"] == before and trail[-1]["objective"] == after


def test_offsets_in_the_head_shift_the_networks_logits():
    torch.manual_seed(0)
    net = MultiTaskNet.from_config(ModelConfig(n_types=5, encoder="resnet18", width=8)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = net(x)["nc"].clone()
    offsets = np.array([0.0, 1.5, 0.0, -0.5, 0.0])
    add_offsets(net, offsets)
    with torch.no_grad():
        after = net(x)["nc"]
    assert torch.allclose(after - before, torch.tensor(offsets, dtype=after.dtype)[None, :, None, None],
                          atol=1e-5)
