"""Segmentation, detection and classification scores with the published reference definitions."""

from wsi_pipeline.evaluation.dataset import DatasetEvaluator, Instances, instance_scores
from wsi_pipeline.evaluation.detection import TypeCounts, pair_centroids, radius_px
from wsi_pipeline.evaluation.instance import (
    PQResult,
    aji,
    aji_plus,
    dice,
    overlap,
    panoptic_quality,
)

__all__ = [
    "DatasetEvaluator",
    "Instances",
    "PQResult",
    "TypeCounts",
    "aji",
    "aji_plus",
    "dice",
    "instance_scores",
    "overlap",
    "pair_centroids",
    "panoptic_quality",
    "radius_px",
]
