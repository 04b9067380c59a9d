"""Where and how the network runs: device, precision and back end, decided once, here.

`choose_runtime` reads the settings (an `InferConfig`'s `device`, `precision` and `backend`, or
the same three words from `wsi_pipeline.load_model`) and the machine (a visible CUDA GPU,
OpenVINO installed, the CPU's bf16 instructions) and answers a `Runtime`: the torch device, the
precision as configured, the registry name of the predictor that runs the network
(`model.predictors`) and the reasons, each logged once. Everything that runs the network, the
slide engine, tile mode, the Python API and the benchmarks, asks this one function.

`decide_runtime` is the same decision with the machine's facts passed in, so that every branch
can be tested on any machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from wsi_pipeline.model.predict import Precision, autocast_dtype, cpu_supports_bf16, resolve_device

log = logging.getLogger(__name__)

#: The network back end as configured (`infer.backend`); not to be confused with the slide
#: reader (`io.ReaderName`).
NetworkBackend = Literal["auto", "torch", "openvino"]
#: The device as configured (`infer.device`).
DeviceName = Literal["auto", "cpu", "cuda"]


class RuntimeUnavailable(RuntimeError):
    """The settings ask for something this machine does not have (a CUDA GPU, OpenVINO)."""


@dataclass(frozen=True)
class Runtime:
    """The decided way to run the network.

    Attributes
    ----------
    device : torch.device
        Where the network runs.
    precision : str
        The precision as configured ("auto", "fp32", "bf16", "fp16", "int8"); `float_dtype`
        is what it means on `device`.
    predictor : str
        Registry name of the predictor (`model.predictors.PREDICTORS`): "torch", "openvino"
        or "openvino-int8".
    reasons : tuple of str
        Why, one phrase per decision, as logged.
    cpu_bf16 : bool
        Whether the machine's CPU has native bf16 ("auto" precision on the CPU).
    """

    device: torch.device
    precision: Precision
    predictor: str
    reasons: tuple[str, ...] = ()
    cpu_bf16: bool = False

    @property
    def backend(self) -> Literal["torch", "openvino"]:
        """The engine that runs the network: "openvino" for both OpenVINO predictors."""
        return "torch" if self.predictor == "torch" else "openvino"

    @property
    def float_dtype(self) -> torch.dtype | None:
        """The dtype of the floating-point layers (None: fp32)."""
        if self.device.type == "cpu" and self.precision in ("auto", "int8"):
            return torch.bfloat16 if self.cpu_bf16 else None
        return autocast_dtype(self.device, self.precision)

    def record(self) -> dict[str, str]:
        """What ran the network, for provenance (maps.zarr's `backend` attribute): back end and
        its version, device, precision."""
        version = torch.__version__
        if self.backend == "openvino":
            import openvino

            version = openvino.get_version()
        dtype = self.float_dtype
        float_precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
        return {"backend": self.backend, "version": version, "device": str(self.device),
                "precision": (f"int8 (float layers {float_precision})" if self.precision == "int8"
                              else float_precision)}


def decide_runtime(device: str | torch.device = "auto", precision: Precision = "auto",
                   backend: NetworkBackend = "auto", *, cuda: bool, openvino: bool,
                   cpu_bf16: bool) -> Runtime:
    """The runtime for these settings on a machine with these facts (no logging).

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or torch.device
        "auto" takes the GPU when there is one.
    precision : {"auto", "fp32", "bf16", "fp16", "int8"}
        "auto": bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; "int8": the
        checkpoint's quantised network, on OpenVINO only.
    backend : {"auto", "torch", "openvino"}
        "auto": OpenVINO on the CPU where it is installed, else PyTorch.
    cuda, openvino, cpu_bf16 : bool
        Whether a CUDA GPU is visible, OpenVINO importable, the CPU's bf16 native.

    Returns
    -------
    Runtime

    Raises
    ------
    RuntimeUnavailable
        CUDA asked for without a GPU, OpenVINO asked for without OpenVINO.
    ValueError
        A combination that cannot run: OpenVINO on CUDA, int8 on PyTorch.

    Examples
    --------
    >>> r = decide_runtime("auto", "auto", "auto", cuda=False, openvino=True, cpu_bf16=False)
    >>> r.device, r.predictor, r.float_dtype is None
    (device(type='cpu'), 'openvino', True)
    >>> decide_runtime("cpu", "int8", "auto", cuda=False, openvino=True, cpu_bf16=True).predictor
    'openvino-int8'
    """
    reasons: list[str] = []
    dev = resolve_device(device, cuda)
    if isinstance(device, str) and device == "auto":
        reasons.append("device auto: " + ("a CUDA GPU is visible" if cuda else "no CUDA GPU, the CPU"))
    else:
        if dev.type == "cuda" and not cuda:
            raise RuntimeUnavailable(f"device {str(device)!r}: no CUDA GPU is available "
                                     "(use device cpu or auto)")
        reasons.append(f"device {dev} as configured")
    if backend == "auto":
        name: Literal["torch", "openvino"] = "openvino" if dev.type == "cpu" and openvino else "torch"
        reasons.append("back end auto: " + (
            "OpenVINO on the CPU" if name == "openvino"
            else "PyTorch (OpenVINO runs on the CPU only)" if dev.type != "cpu"
            else "PyTorch (OpenVINO is not installed)"))
    else:
        if backend == "openvino" and dev.type != "cpu":
            raise ValueError(f"the openvino back end runs on the CPU only, not on {dev}")
        if backend == "openvino" and not openvino:
            raise RuntimeUnavailable("back end openvino: OpenVINO is not installed (pip install openvino)")
        name = backend
        reasons.append(f"back end {backend} as configured")
    if precision == "int8" and name != "openvino":
        raise ValueError("precision int8 runs a quantised network (wsi-pipeline quantize-model) on the "
                         f"openvino back end; here the back end is {name}")
    if precision == "auto":
        chosen = ("fp32" if dev.type == "cpu" and not cpu_bf16 else
                  "bf16 (native on this CPU)" if dev.type == "cpu" else "fp16/bf16 autocast on CUDA")
        reasons.append(f"precision auto: {chosen}")
    else:
        reasons.append(f"precision {precision} as configured")
    predictor = "openvino-int8" if precision == "int8" else name
    return Runtime(dev, precision, predictor, tuple(reasons), cpu_bf16)


def choose_runtime(device: str | torch.device = "auto", precision: Precision = "auto",
                   backend: NetworkBackend = "auto") -> Runtime:
    """The runtime for these settings on this machine, its reasons logged (INFO).

    The one place that decides device, precision and back end (module docstring);
    parameters, returns and errors as `decide_runtime`.

    Examples
    --------
    >>> choose_runtime("cpu", "fp32", "torch").record()["precision"]
    'fp32'
    """
    from wsi_pipeline.model.openvino_net import openvino_available

    runtime = decide_runtime(device, precision, backend, cuda=torch.cuda.is_available(),
                             openvino=openvino_available(), cpu_bf16=cpu_supports_bf16())
    global _last_logged
    if runtime != _last_logged:  # once per decision, not once per slide of a cohort worker
        log.info("network runtime %s on %s: %s", runtime.predictor, runtime.device,
                 "; ".join(runtime.reasons))
        _last_logged = runtime
    return runtime


_last_logged: Runtime | None = None
