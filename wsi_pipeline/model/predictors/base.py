"""The interface every network back end implements: a prepared network and how to call it.

A `Predictor` is built once per model and runtime (`model.predictors.load_predictor`) and then
turns batches of uint8 RGB tiles into the network's maps. The back ends differ only in how
they prepare the network (`prepare`): plain PyTorch with BatchNorm folded, the network
compiled by OpenVINO, or the checkpoint's int8 network on OpenVINO. Batching, flip
test-time augmentation, the output activations and the storage quantisation are the one
PyTorch code path of `model.predict`, so every back end's maps mean the same thing.

Adding a back end is one file, a subclass with a `name` and a `prepare`, plus its line in
`model.predictors.PREDICTORS` and its name as a word of `infer.backend`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from torch import nn

from wsi_pipeline.model.checkpoint import LoadedModel
from wsi_pipeline.model.predict import predict_batch, predict_batch_compact
from wsi_pipeline.model.runtime import Runtime


class Predictor(ABC):
    """A network ready to run on one runtime.

    Parameters
    ----------
    model : LoadedModel
        The checkpoint; its network is left as it was (a training network can be prepared for
        validation and go on training).
    runtime : Runtime
        Device, precision and back end (`model.runtime.choose_runtime`).

    Attributes
    ----------
    model : LoadedModel
        The checkpoint (class names, colours, mpp, stain target).
    net : torch.nn.Module
        The prepared network: called with a float (B, 3, H, W) batch in [0, 1], it returns the
        dict of raw "ns", "hv", "nc" outputs.
    runtime : Runtime
    """

    #: registry name (`model.predictors.PREDICTORS`)
    name: ClassVar[str]

    def __init__(self, model: LoadedModel, runtime: Runtime) -> None:
        self.model = model
        self.runtime = runtime
        self.net = self.prepare(model, runtime)

    @classmethod
    @abstractmethod
    def prepare(cls, model: LoadedModel, runtime: Runtime) -> nn.Module:
        """The inference copy of `model.net` for `runtime`. Called once, outside
        `torch.inference_mode()` (memory-format changes inside it break training)."""

    @property
    def metadata(self) -> dict[str, str]:
        """What runs the network (back end, version, device, precision), for provenance."""
        return self.runtime.record()

    def predict(self, batch: np.ndarray, tta: bool = False) -> dict[str, np.ndarray]:
        """uint8 (B, H, W, 3) RGB -> {"ns": (B, H, W), "hv": (B, 2, H, W), "nc": (B, C, H, W)}.

        Float32 nucleus probability, HV distances and type softmax; H and W multiples of 32;
        `tta`: the mean over four flips (`model.predict`).
        """
        return predict_batch(self.net, batch, self.runtime.device, self.runtime.precision, tta)

    def predict_compact(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """As `predict`, in the maps.zarr storage types (ns, hv float16; nc uint8 = p * 255)."""
        return predict_batch_compact(self.net, batch, self.runtime.device, self.runtime.precision)
