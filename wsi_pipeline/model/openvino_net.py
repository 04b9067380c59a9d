"""The network compiled by OpenVINO for CPU inference: the same function, run by fused kernels.

PyTorch's eager CPU forward spends much of its time outside the convolutions: a ReLU, an
addition, a concatenation or an upsampling is each a separate pass over memory, and the
full-resolution decoder layers of this network (16 channels at every input pixel, three
branches) are bound by memory traffic, not arithmetic. OpenVINO fuses those passes into the
convolutions and picks AMX/AVX-512 bf16 or AVX2 kernels for the CPU it runs on. Measured with
`benchmarks/model_speed.py` (figures in docs/performance.md): about 2× the PyTorch engine path per tile.

`OpenVINONet` is an `nn.Module` standing in for the network inside `model.predict`, so batching,
flip TTA, the output activations and the storage quantisation stay the one PyTorch code path.
The network (BatchNorm folded first, `model.fold`) is converted once and compiled per input shape
on first use and kept, and a batch smaller than the largest compiled one for its
tile size is zero-padded up to it (the last batch of a slide), so a slide compiles once.

A batch runs as one sub-batch per thread, each on its own single-threaded OpenVINO stream, all
at once. One stream of N threads meets at a barrier after every layer, so a thread the OS
preempts (for the engine's tile readers or writer, on a machine with few cores) stalls all N;
independent streams stall only themselves. Measured on a 2-core AMX Xeon (bf16, 256² tiles,
an exploratory script): 12.5 -> 11.6 ms per tile alone, 20.7 -> 14.6 ms per tile while a thread
read slide tiles next to it; inside the engine, whose readers and writer compete for the same
two cores, the gain on the 40k² slide was within noise (docs/performance.md). Each tile's
output is bitwise the same whatever the batch or the number of streams (OpenVINO's CPU
kernels do not mix samples), so the maps do not change.
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
        self.streams = max(1, int(threads))  # one single-threaded stream per thread
        self._config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": self.streams,
                        "NUM_STREAMS": self.streams,
                        "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT"}
        self._compiled: dict[tuple[int, int, int], list[Any]] = {}  # InferRequests, one per stream
        self.precision = precision
        self.version = ov.get_version()

    @property
    def compiled_shapes(self) -> list[tuple[int, int, int]]:
        """(sub-batch, height, width) of every compiled model so far."""
        return sorted(self._compiled)

    def _requests(self, batch: int, height: int, width: int) -> tuple[list[Any], int]:
        """Infer requests (one per stream) for sub-batches of at least `batch` tiles of this
        size, and their sub-batch size."""
        sizes = [b for (b, h, w) in self._compiled if (h, w) == (height, width) and b >= batch]
        if sizes:
            size = min(sizes)
            return self._compiled[(size, height, width)], size
        t0 = time.perf_counter()
        model = self._model.clone()
        model.reshape({model.inputs[0]: [batch, 3, height, width]})
        compiled = self._core.compile_model(model, "CPU", self._config)
        requests = [compiled.create_infer_request() for _ in range(self.streams)]
        self._compiled[(batch, height, width)] = requests
        log.info("OpenVINO %s: network compiled for %d x 3 x %d x %d in %.1f s (precision %s, "
                 "%d stream(s))", self.version, batch, height, width, time.perf_counter() - t0,
                 self.precision, self.streams)
        return requests, batch

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        # sub-batches of at least ceil(b / streams) tiles: never more of them than requests
        requests, size = self._requests(-(-b // self.streams), h, w)
        pixels = np.ascontiguousarray(x.detach().float().numpy())
        running = []
        for request, start in zip(requests, range(0, b, size), strict=False):
            part = pixels[start : start + size]
            if len(part) < size:
                part = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), part.dtype)])
            request.start_async({0: part})
            running.append((request, min(size, b - start)))
        for request, _ in running:
            request.wait()
        return {name: torch.from_numpy(np.concatenate(
                    [np.array(request.get_tensor(name).data[:n]) for request, n in running]))
                for name in OUTPUTS}
