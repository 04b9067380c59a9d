"""The PyTorch back end: BatchNorm folded, bf16 weights in channels_last where bf16 is native.

On a CPU with native bf16 (AVX512-BF16 / AMX-BF16) the weights are cast to bf16 and the network
runs without autocast: autocast would cast activations between bf16 and fp32 around every op
it keeps in fp32 (upsampling) and every concatenation that meets both (measured:
benchmarks/model_speed.py). The normalisation constants (buffers) stay fp32. On CUDA the
weights stay fp32 under fp16/bf16 autocast.
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_pipeline.model.checkpoint import LoadedModel
from wsi_pipeline.model.fold import fold_batchnorm
from wsi_pipeline.model.predictors.base import Predictor
from wsi_pipeline.model.runtime import Runtime


class TorchPredictor(Predictor):
    """The network in PyTorch eager mode on the runtime's device."""

    name = "torch"

    @classmethod
    def prepare(cls, model: LoadedModel, runtime: Runtime) -> nn.Module:
        net = fold_batchnorm(model.net).to(runtime.device)
        dtype = runtime.float_dtype
        if dtype is not None:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
            if runtime.device.type == "cpu":
                with torch.no_grad():
                    for p in net.parameters():  # buffers (the normalisation constants) stay fp32
                        p.data = p.data.to(dtype)
        return net
