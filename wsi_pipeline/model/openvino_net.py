"""The network compiled by OpenVINO for CPU inference: the same function, run by fused kernels.

PyTorch's eager CPU forward spends much of its time outside the convolutions: a ReLU, an
addition, a concatenation or an upsampling is each a separate pass over memory, and the
full-resolution decoder layers of this network (16 channels at every input pixel, three
branches) are bound by memory traffic, not arithmetic. OpenVINO fuses those passes into the
convolutions and picks AMX/AVX-512 bf16 or AVX2 kernels for the CPU it runs on. Measured with
`benchmarks/model_speed.py` (figures in the README): about 2× the PyTorch engine path per tile.

`OpenVINONet` is an `nn.Module` standing in for the network inside `model.predict`, so batching,
flip TTA, the output activations and the storage quantisation stay the one PyTorch code path.
The network (BatchNorm folded first, `model.fold`) is converted once and compiled per input shape
on first use and kept, and a batch smaller than the largest compiled one for its
tile size is zero-padded up to it (the last batch of a slide), so a slide compiles once.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from wsi_pipeline.model.fold import fold_batchnorm

log = logging.getLogger(__name__)

OVPrecision = Literal["f32", "bf16", "f16"]
OUTPUTS = ("ns", "hv", "nc")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def convert_network(net: nn.Module) -> Any:
    """`net` (BatchNorm folded first) as an `openvino.Model` whose batch and spatial size are
    free; each `OpenVINONet` compiles it per input shape."""
    import openvino as ov

    t0 = time.perf_counter()
    # Traced once on a small input (tracing runs the network; a full batch costs seconds
    # more) with every dimension but the channels left free, then reshaped per input shape.
    # (The caller may be under autocast, which must not reach the trace.)
    with torch.no_grad(), torch.autocast("cpu", enabled=False), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", DeprecationWarning)  # its TorchScript tracing
        model = ov.convert_model(fold_batchnorm(net).float(), example_input=torch.rand(1, 3, 64, 64))
    model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, -1, -1])})
    log.info("OpenVINO %s: network converted in %.1f s", ov.get_version(), time.perf_counter() - t0)
    return model


class OpenVINONet(nn.Module):
    """The network's forward (dict of ns/hv/nc) through OpenVINO on the CPU; see the module
    docstring. `model`: the `openvino.Model` of `convert_network`, or its int8 quantisation
    (`model.quantize`).

    `precision`: OpenVINO's inference precision (its "INFERENCE_PRECISION_HINT"; of an int8
    model, that of the layers left in floating point); `threads`: its thread count (the
    engine's torch thread count, so both back ends use the same cores).
    """

    def __init__(self, model: Any, precision: OVPrecision, threads: int) -> None:
        super().__init__()
        import openvino as ov

        self._model = model  # an openvino.Model with a free batch and spatial size
        self._core = ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads),
                        "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        self._compiled: dict[tuple[int, int, int], Any] = {}  # OpenVINO InferRequest
        self.precision = precision
        self.version = ov.get_version()

    @property
    def compiled_shapes(self) -> list[tuple[int, int, int]]:
        """(batch, height, width) of every compiled model so far."""
        return sorted(self._compiled)

    def _request(self, batch: int, height: int, width: int) -> tuple[Any, int]:
        """An infer request for at least `batch` tiles of this size, and its batch size."""
        sizes = [b for (b, h, w) in self._compiled if (h, w) == (height, width) and b >= batch]
        if sizes:
            size = min(sizes)
            return self._compiled[(size, height, width)], size
        t0 = time.perf_counter()
        model = self._model.clone()
        model.reshape({model.inputs[0]: [batch, 3, height, width]})
        request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
        self._compiled[(batch, height, width)] = request
        log.info("OpenVINO %s: network compiled for %d x 3 x %d x %d in %.1f s (precision %s)",
                 self.version, batch, height, width, time.perf_counter() - t0, self.precision)
        return request, batch

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        request, size = self._request(b, h, w)
        pixels = np.ascontiguousarray(x.detach().float().numpy())
        if size > b:
            pixels = np.concatenate([pixels, np.zeros((size - b, *pixels.shape[1:]), pixels.dtype)])
        request.infer({0: pixels})
        return {name: torch.from_numpy(np.array(request.get_tensor(name).data[:b])) for name in OUTPUTS}
