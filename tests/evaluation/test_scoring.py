import numpy as np
from skimage.draw import disk

from wsi_pipeline.datasets.mix import DATASET_KEY
from wsi_pipeline.datasets.sample import Sample
from wsi_pipeline.datasets.targets import hv_maps
from wsi_pipeline.evaluation.scoring import flatten_scores, score_maps


def _pair(typed: bool, dataset: str) -> tuple[Sample, dict]:
    inst = np.zeros((96, 96), np.int32)
    for i, (r, c) in enumerate(((20, 20), (20, 60), (60, 40)), 1):
        inst[disk((r, c), 9, shape=inst.shape)] = i
    typ = np.where(inst > 0, 1 + (inst % 2), 0).astype(np.int32) if typed else None
    names = ("background", "a", "b") if typed else ("background", "nucleus")
    s = Sample(dataset, np.zeros((96, 96, 3), np.uint8), inst, typ, names, 0.25,
               meta={DATASET_KEY: dataset})
    nc = np.zeros((3, 96, 96), np.float32)
    labels = typ if typed else (inst > 0).astype(np.int32)
    for k in range(3):
        nc[k] = labels == k
    return s, {"ns": (inst > 0).astype(np.float32), "hv": hv_maps(inst), "nc": nc}


def test_oracle_maps_score_perfectly_per_dataset_with_types_only_where_labelled() -> None:
    (a, ma), (b, mb) = _pair(True, "typed"), _pair(False, "plain")
    scores = score_maps([a, b], [ma, mb], n_types=3, mpp=0.25)
    assert scores["typed"]["pq"] > 0.9 and scores["plain"]["pq"] > 0.9
    assert scores["typed"]["mpq"] > 0.9 and "mpq" not in scores["plain"]
    assert scores["plain"]["f_d"] == 1.0
    row = flatten_scores(scores)
    assert row["val_mpq"] == scores["typed"]["mpq"]
    assert row["val_pq"] == np.mean([scores["typed"]["pq"], scores["plain"]["pq"]])
    assert flatten_scores({"only": scores["plain"]}) == {f"val_{k}": v for k, v in scores["plain"].items()}


def test_pq_is_reported_with_its_factors_dq_and_sq() -> None:
    s, m = _pair(False, "plain")
    m["ns"][:, 45:] = 0  # loses the nucleus right of column 45 and cuts the one across it
    scores = score_maps([s], [m], n_types=3, mpp=0.25)["plain"]
    assert scores["dq"] < 1.0 and scores["sq"] < 1.0
    assert np.isclose(scores["pq"], scores["dq"] * scores["sq"])
