"""Point-labelled images in a training run: targets on the network's own instances, cached."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.test_loop import NAMES, _cfg, _sample
from wsi_pipeline.datasets.mix import DATASET_KEY
from wsi_pipeline.datasets.points import POINTS_ONLY
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.evaluation.scoring import score_by_dataset
from wsi_pipeline.model.checkpoint import load_checkpoint
from wsi_pipeline.model.losses import IGNORE
from wsi_pipeline.training.loop import class_counts, train
from wsi_pipeline.training.point_instances import default_source, derive_point_targets


def _points(seed: int) -> Sample:
    """A typed sample turned into a point-labelled one: a dot at each nucleus's centre."""
    s = _sample(seed)
    pts = []
    for i in range(1, int(s.inst_map.max()) + 1):
        rr, cc = np.nonzero(s.inst_map == i)
        if len(rr):
            pts.append([rr.mean(), cc.mean(), s.type_map[rr[0], cc[0]]])
    return Sample(f"p{seed}", s.image, np.zeros_like(s.inst_map), None, NAMES, 0.25,
                  group=f"pg{seed}", meta={DATASET_KEY: "dots"}, points=np.asarray(pts, float))


@pytest.fixture
def start(tmp_path):
    """A checkpoint to outline the dots with (two steps of a tiny network)."""
    data = ([_sample(i) for i in range(4)], [_sample(9)])
    return train(_cfg(tmp_path, out_dir=str(tmp_path / "start"), epochs=1, max_steps_per_epoch=2),
                 samples=data, progress=False).run_dir / "last.pt"


def test_points_get_targets_cached_by_checkpoint_and_image(tmp_path, start):
    cfg = _cfg(tmp_path)
    source = default_source(start, cfg.postproc, cfg.mpp, cfg.patch_size)
    samples = [_points(1), _points(2)]
    out = derive_point_targets(samples, source, tmp_path / "cache")
    files = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 2
    for s, o in zip(samples, out, strict=True):
        assert o.meta[POINTS_ONLY] and o.points is s.points
        labelled = o.type_map != IGNORE
        assert ((o.inst_map > 0) == labelled).all()
        # the dots' pixels carry their classes (the random nuclei may touch: where two dots of
        # different classes share one outline, their disks may overlap; test_points pins that)
        r, c = np.rint(s.points[:, :2]).astype(int).T
        assert (o.type_map[r, c] == s.points[:, 2]).mean() >= 0.6
        assert set(np.unique(o.type_map[labelled])) <= {1, 2}
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = derive_point_targets(samples, source, tmp_path / "cache")
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # read back, not recomputed
    assert all((a.type_map == b.type_map).all() for a, b in zip(out, again, strict=True))
    derive_point_targets(samples, source, tmp_path / "cache", refresh=True)
    assert [f.stat().st_mtime_ns for f in files] != mtimes


def test_a_run_with_point_labels_scores_them_and_counts_them_for_the_cost(tmp_path, start):
    typed = [_sample(i) for i in range(3)]
    for s in typed:
        s.meta[DATASET_KEY] = "masks"
    val_typed = _sample(9)
    val_typed.meta[DATASET_KEY] = "masks"
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "pts"), epochs=1, max_steps_per_epoch=2,
               init_from=str(start), val_every=1, validate_start=True,
               selection=["masks_mpq", "dots_f1_mean", "all_f1_1"],
               optim={"lr": 3e-3, "schedule": "constant", "train_parts": ["decoders.nc"],
                      "ema_decay": 0.9},
               sampling={"samples_per_epoch": 4, "rare_class_strength": 1.0})
    result = train(cfg, samples=(typed + [_points(4), _points(5)], [val_typed, _points(8)]),
                   progress=False)
    assert [row["epoch"] for row in result.history] == [0, 1] and result.epochs_done == 1
    # epoch 0 scores the starting weights themselves (not the still-empty moving average)
    start_scores = score_by_dataset(load_checkpoint(start).net, [val_typed], n_types=3, mpp=0.25,
                                    tile=cfg.patch_size + 64, stride=cfg.patch_size,
                                    batch_size=2, device="cpu", postproc=cfg.postproc)
    assert result.history[0]["val_masks_dice"] == pytest.approx(start_scores["masks"]["dice"], abs=0.02)
    row = result.history[-1]
    for key in ("val_dots_recall", "val_dots_f1_mean", "val_all_f1_1", "val_masks_pq"):
        assert 0 <= row[key] <= 1 or np.isnan(row[key]), key
    assert len(list((tmp_path / "pts" / "point_instances").glob("*.npz"))) == 3


def test_class_counts_leave_out_unlabelled_pixels():
    s = _sample(1)
    typ = np.full_like(s.type_map, IGNORE)
    typ[s.inst_map == 1] = 2
    pts = Sample("p", s.image, (s.inst_map == 1).astype(np.int32), typ, NAMES, 0.25)
    counts = class_counts([pts], 3, "pixels")
    assert counts.tolist() == [0, 0, float((s.inst_map == 1).sum())]
