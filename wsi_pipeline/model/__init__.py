"""The multi-task network (NS, HV, NC branches with shared correlation attention) and its I/O."""

from wsi_pipeline.model.checkpoint import (
    CheckpointError,
    LoadedModel,
    default_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from wsi_pipeline.model.config import ModelConfig
from wsi_pipeline.model.network import MultiTaskNet

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "ModelConfig",
    "MultiTaskNet",
    "default_checkpoint_path",
    "load_checkpoint",
    "save_checkpoint",
]
