"""Network back ends behind one interface, chosen by name: the one way to prepare the network.

    runtime = choose_runtime(cfg.device, cfg.precision, cfg.backend)   # model.runtime
    predictor = load_predictor(model, runtime)                          # prepared once
    maps = predictor.predict(tiles)

`PREDICTORS` maps a name to the module and class of its back end, imported only when asked
for (OpenVINO is not imported by a PyTorch run). A new back end (ONNX Runtime, TensorRT) is
one module with a `Predictor` subclass, its line here and its name among the words of
`infer.backend` (`inference.config.InferConfig`, `model.runtime.NetworkBackend`):
`model.runtime.decide_runtime` hands a configured name to the predictor of that name.
"""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

import torch

from wsi_pipeline.model.checkpoint import LoadedModel
from wsi_pipeline.model.network import MultiTaskNet
from wsi_pipeline.model.predictors.base import Predictor
from wsi_pipeline.model.runtime import Runtime

__all__ = ["PREDICTORS", "Predictor", "bare_model", "load_predictor", "predictor_class"]

#: name -> "module:Class" of every back end
PREDICTORS: dict[str, str] = {
    "torch": "wsi_pipeline.model.predictors.torch_predictor:TorchPredictor",
    "openvino": "wsi_pipeline.model.predictors.openvino_predictor:OpenVINOPredictor",
    "openvino-int8": "wsi_pipeline.model.predictors.int8_predictor:Int8Predictor",
}


def predictor_class(name: str) -> type[Predictor]:
    """The `Predictor` subclass registered as `name`.

    Raises
    ------
    KeyError
        No back end of that name; the message lists those there are.

    Examples
    --------
    >>> predictor_class("torch").__name__
    'TorchPredictor'
    """
    try:
        module, _, cls = PREDICTORS[name].partition(":")
    except KeyError:
        raise KeyError(f"no network back end {name!r}; there are {', '.join(sorted(PREDICTORS))}") from None
    found: type[Predictor] = getattr(importlib.import_module(module), cls)
    return found


_CACHE: dict[tuple, Predictor] = {}  # one entry: the last predictor built
_CACHE_LOCK = threading.Lock()


def load_predictor(model: LoadedModel, runtime: Runtime, *, reuse: bool = True) -> Predictor:
    """The predictor of `runtime.predictor` for `model`, prepared once per process.

    Parameters
    ----------
    model : LoadedModel
        The checkpoint (`model.load_checkpoint`); its network is not changed.
    runtime : Runtime
        From `model.runtime.choose_runtime`.
    reuse : bool
        Keep the last predictor and hand it out again for the same model, runtime and torch
        thread count: compiling for OpenVINO takes seconds, and a cohort worker runs every
        slide it gets with one model. False builds a fresh one (and keeps nothing).

    Returns
    -------
    Predictor
    """
    cls = predictor_class(runtime.predictor)
    if not reuse:
        return cls(model, runtime)
    key = (id(model), model.sha256, runtime.device, runtime.precision, runtime.predictor,
           torch.get_num_threads())
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = cls(model, runtime)
        return _CACHE[key]


def bare_model(net: MultiTaskNet, mpp: float = 0.25) -> LoadedModel:
    """`net` as a checkpoint that was never saved (no file, so no int8 network and no stain
    target), for preparing a network built in memory: benchmarks of network sizes, tests.

    Examples
    --------
    >>> from wsi_pipeline.model import MultiTaskNet
    >>> model = bare_model(MultiTaskNet(encoder="resnet18", width=8))
    >>> model.class_names[:2], model.sha256[:4]
    (('t0', 't1'), '0000')
    """
    names = tuple(f"t{i}" for i in range(net.config.n_types))
    return LoadedModel(net=net, config=net.config, class_names=names,
                       class_colors=("#000000",) * len(names), mpp=mpp, sha256="0" * 64,
                       path=Path("<in memory>"))
