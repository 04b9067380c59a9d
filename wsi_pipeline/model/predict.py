"""Run the network on a batch of uint8 tiles, as fast as the hardware allows.

The network comes prepared by its back end (`model.predictors`: BatchNorm folded, bf16 weights
on CPUs with native bf16, or compiled by OpenVINO); a network whose weights are bf16 casts its
normalised input itself and runs without autocast. The image normalisation and the outputs stay
fp32. CUDA: fp16 autocast (bf16 where the GPU supports it) with pinned host memory and
non-blocking copies.

Test-time augmentation (`tta=True`) averages the network over the four flips of each tile
(identity, left-right, up-down, both), undoing each flip on the outputs: probabilities flip
back, and the HV map's horizontal channel changes sign under a left-right flip (a pixel right
of its nucleus's centre becomes left of it), the vertical one under an up-down flip. Four
times the compute, for maps less sensitive to the network's orientation biases.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]


#: CPU feature flags (Linux /proc/cpuinfo names) of native bf16 arithmetic: x86 AVX512-BF16 and
#: AMX-BF16, Arm BF16.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """Feature flags of the first CPU ("flags" on x86, "Features" on Arm); empty if unknown."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether bf16 autocast runs natively. oneDNN also "supports" bf16 on any AVX-512 CPU
    (Skylake, and `torch.ops.mkldnn._is_mkldnn_bf16_supported()` says True there) but emulates
    it, slower than fp32: so the CPU must advertise a bf16 instruction set itself. Without
    /proc/cpuinfo (not Linux) this answers False: fp32 is never the slow choice."""
    return torch.backends.mkldnn.is_available() and bool(cpu_flags() & NATIVE_BF16_FLAGS)


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for `device`, or None for plain fp32. "int8" (the OpenVINO int8
    network, `model.quantize`) answers as "auto" does, for the layers it leaves in float."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def resolve_device(device: str | torch.device = "auto", cuda: bool | None = None) -> torch.device:
    """"auto" picks CUDA when available (`cuda`: whether it is; None: ask torch). The one rule
    of the automatic device, for inference (`model.runtime`) and training alike."""
    if isinstance(device, str) and device == "auto":
        if cuda is None:
            cuda = torch.cuda.is_available()
        return torch.device("cuda" if cuda else "cpu")
    return torch.device(device)


def _weight_dtype(net: nn.Module) -> torch.dtype:
    first = next(net.parameters(), None)
    return torch.float32 if first is None else first.dtype


def predict_batch(
    net: nn.Module,
    batch: np.ndarray,
    device: torch.device | str = "cpu",
    precision: Precision = "auto",
    tta: bool = False,
) -> dict[str, np.ndarray]:
    """uint8 (B, H, W, 3) RGB -> {"ns": (B,H,W) nucleus prob, "hv": (B,2,H,W), "nc": (B,C,H,W) softmax}.

    All float32. H and W must be multiples of 32 (the network's contract).
    """
    with torch.inference_mode():
        ns, hv, nc = _forward(net, batch, resolve_device(device), precision, tta)
        return {"ns": ns.cpu().numpy(), "hv": hv.cpu().numpy(), "nc": nc.cpu().numpy()}


def predict_batch_compact(
    net: nn.Module,
    batch: np.ndarray,
    device: torch.device | str = "cpu",
    precision: Precision = "auto",
    tta: bool = False,
) -> dict[str, np.ndarray]:
    """As `predict_batch`, already in the maps.zarr storage types (ns, hv float16; nc uint8 = p*255).

    Quantising on the device (in parallel torch kernels, or on the GPU) keeps this work off the
    single writer thread and quarters the device-to-host copy of `nc`.
    """
    with torch.inference_mode():
        ns, hv, nc = _forward(net, batch, resolve_device(device), precision, tta)
        nc8 = nc.mul_(255.0).round_().to(torch.uint8)
        return {"ns": ns.half().cpu().numpy(), "hv": hv.half().cpu().numpy(), "nc": nc8.cpu().numpy()}


# (flip dims of a (B, C, H, W) tensor, sign of the H and V channels after undoing the flip)
_FLIPS: tuple[tuple[tuple[int, ...], tuple[float, float]], ...] = (
    ((), (1.0, 1.0)), ((3,), (-1.0, 1.0)), ((2,), (1.0, -1.0)), ((2, 3), (-1.0, -1.0)))


def _forward(net: nn.Module, batch: np.ndarray, device: torch.device, precision: Precision,
             tta: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ns prob, hv, nc softmax) as float32 tensors on `device`; call under inference_mode.
    With `tta`, the mean over the four flips (module docstring)."""
    if not tta:
        return _forward_once(net, torch.from_numpy(np.ascontiguousarray(batch)), device, precision)
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)  # uint8 (B, 3, H, W)
    sums: list[torch.Tensor] = []
    for dims, (sh, sv) in _FLIPS:
        view = (x.flip(dims) if dims else x).permute(0, 2, 3, 1)
        ns, hv, nc = _forward_once(net, view, device, precision)
        if dims:
            ns, hv, nc = ns.flip([d - 1 for d in dims]), hv.flip(dims), nc.flip(dims)
        hv = hv * torch.tensor([sh, sv], device=hv.device).view(1, 2, 1, 1)
        sums = [ns, hv, nc] if not sums else [a + b for a, b in zip(sums, (ns, hv, nc), strict=True)]
    return sums[0] / 4, sums[1] / 4, sums[2] / 4


def _forward_once(net: nn.Module, batch: torch.Tensor, device: torch.device,
                  precision: Precision) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over uint8 (B, H, W, 3)."""
    dtype = autocast_dtype(device, precision)
    x = batch.contiguous()
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if dtype is not None:
        x = x.contiguous(memory_format=torch.channels_last)
    # a network prepared with low-precision weights casts its normalised input itself
    autocast = dtype is not None and _weight_dtype(net) == torch.float32
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=autocast):
        out = net(x)
    ns_logits = out["ns"].float()
    ns = torch.sigmoid(ns_logits[:, 1] - ns_logits[:, 0])
    return ns, out["hv"].float(), torch.softmax(out["nc"].float(), dim=1)
