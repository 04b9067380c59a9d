"""The default weights inside the package: they load, match the model card, still segment, and
their int8 network beside them comes from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_pipeline.datasets import read_consep_patches, split_by_group
from wsi_pipeline.evaluation import DatasetEvaluator, Instances
from wsi_pipeline.model import default_checkpoint_path, load_checkpoint
from wsi_pipeline.model.predictors import load_predictor
from wsi_pipeline.model.quantize import int8_model_path, load_int8_model
from wsi_pipeline.model.runtime import choose_runtime
from wsi_pipeline.tile_mode.predict import segment_image

MODEL_CARD = Path(__file__).resolve().parents[2] / "MODEL_CARD.md"


def test_shipped_checkpoint_loads_and_matches_model_card():
    path = default_checkpoint_path()
    assert path.stat().st_size < 50e6
    model = load_checkpoint(path)
    assert model.class_names == ("background", "other", "inflammatory", "epithelial", "spindle")
    assert model.mpp == 0.25
    card = MODEL_CARD.read_text()
    assert f"`{model.sha256}`" in card, "MODEL_CARD.md names another file"


def test_shipped_int8_network_is_quantised_from_the_shipped_weights():
    path = default_checkpoint_path()
    xml = int8_model_path(path)
    assert xml.stat().st_size + xml.with_suffix(".bin").stat().st_size < 50e6
    load_int8_model(xml, load_checkpoint(path).sha256)  # raises if stamped with other weights


def test_shipped_model_segments_validation_patches(shared_data):
    """A regression floor well below the model card's figures, on a quarter of the validation tiles."""
    samples = read_consep_patches(shared_data / "consep_patches" / "train")
    _, val = split_by_group(samples, 0.2, 0)
    predictor = load_predictor(load_checkpoint(default_checkpoint_path()),
                               choose_runtime("cpu", "auto", "torch"))
    ev = DatasetEvaluator(type_ids=[1, 2, 3, 4], mpp=0.25)
    for s in val[::4]:
        result = segment_image(predictor, s.image, image_mpp=0.25)
        ids, first = np.unique(s.inst_map, return_index=True)
        truth = Instances(s.inst_map, s.type_map.ravel()[first[ids > 0]])
        ev.add(s.name, truth, Instances(result.inst_map, result.types))
    summary = ev.summary()
    # Measured on this subset when shipped (sha256 96349da0…, stage 10, no TTA): PQ 0.389, F_d
    # 0.710 (stage 5's 29a699da…: 0.377 / 0.705). The floors leave room for BLAS differences
    # between machines.
    assert summary["pq"] >= 0.33 and summary["f_d"] >= 0.66, summary


def test_shipped_model_segments_a_held_out_monuseg_tile(shared_data):
    """Generalisation floor beyond CoNSeP: a MoNuSeg breast tile held out of training
    (configs/train_mix.yaml val_groups), at its own pixel size (0.2456 µm/px)."""
    from wsi_pipeline.datasets.aperio_xml import read_monuseg

    (tile,) = [s for s in read_monuseg(shared_data / "monuseg_train")
               if s.name == "TCGA-A7-A13E-01Z-00-DX1"]
    predictor = load_predictor(load_checkpoint(default_checkpoint_path()),
                               choose_runtime("cpu", "auto", "torch"))
    result = segment_image(predictor, tile.image, image_mpp=tile.mpp)
    ev = DatasetEvaluator(type_ids=[], mpp=0.25)
    ev.add(tile.name, Instances(tile.inst_map, np.ones(int(tile.inst_map.max()), np.int64)),
           Instances(result.inst_map, np.ones(len(result.types), np.int64)))
    summary = ev.summary()
    # Measured when shipped (sha256 96349da0…, stage 10, no TTA): PQ 0.492, F_d 0.723 (stage 5's
    # 29a699da…: 0.494 / 0.726; the CoNSeP-only weights before the mix: about 0.3 on the MoNuSeg
    # validation tiles).
    assert summary["pq"] >= 0.46 and summary["f_d"] >= 0.68, summary


def test_shipped_model_types_held_out_point_labelled_images(shared_data):
    """A regression floor for the types beyond CoNSeP (issue 24): two held-out images of each
    point-labelled set (configs/train_types_stage11.yaml val_groups), scored as training
    validation scores them (recall of the marked nuclei, F1 over the labelled points)."""
    from wsi_pipeline.datasets.brca_m2c import read_brca_m2c
    from wsi_pipeline.datasets.crchistophenotypes import read_crchistophenotypes
    from wsi_pipeline.evaluation.detection import radius_px
    from wsi_pipeline.evaluation.points import PointCounts, centroids_rc

    predictor = load_predictor(load_checkpoint(default_checkpoint_path()),
                               choose_runtime("cpu", "auto", "torch"))
    crc = {"img16", "img60"}  # CRC: epithelial 1, fibroblast 2, inflammatory 3, others 4
    sets = {
        "crc": ([s for s in read_crchistophenotypes(shared_data / "crchistophenotypes",
                                                    splits=("validation",)) if s.name in crc],
                [0, 3, 4, 2, 1]),
        "brca": (read_brca_m2c(shared_data / "brca_m2c", splits=("val",))[:2], [0, 2, 3, 4]),
    }
    scores = {}
    for name, (samples, to_model) in sets.items():
        counts = PointCounts()
        for s in samples:
            result = segment_image(predictor, s.image, image_mpp=s.mpp)
            # points at the image's own pixels; the table's instances are at the same pixels
            classes = np.asarray(to_model)[s.points[:, 2].astype(int)]
            counts.add(s.points[:, :2], classes, centroids_rc(result.inst_map), result.types,
                       radius_px(s.mpp))
        scores[name] = counts.scores()
    # Measured when shipped (sha256 998e0718…, stage 13, PyTorch, no TTA, AMD EPYC): CRC recall
    # 0.924, F1 mean 0.628; BRCA-M2C recall 0.879, F1 mean 0.558 (stage 11's dfaed461…: 0.564 /
    # 0.585). The floors leave room for BLAS differences between machines.
    assert scores["crc"]["recall"] >= 0.85 and scores["brca"]["recall"] >= 0.82, scores
    assert scores["crc"]["f1_mean"] >= 0.45 and scores["brca"]["f1_mean"] >= 0.52, scores
