"""The network that validation scoring and point-label instances run: on a CPU with OpenVINO,
the network compiled by it, which is what `wsi-pipeline run` uses there.

Validation predicts whole images through the tiled path; PyTorch's eager CPU forward took 54 s
for one 1100² CRCHistoPhenotypes image on a 2-core AVX512-BF16 EPYC where OpenVINO took 5–8 s
(conversion ~40 s once per validation), so scoring 25 point-labelled images each validation is
affordable. Scores then come from the engine's own CPU back end (bf16 where the CPU has native
bf16, else f32); GPU runs score with the network itself.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from wsi_pipeline.model.openvino_net import (
    OpenVINONet,
    OVPrecision,
    convert_network,
    openvino_available,
)
from wsi_pipeline.model.predict import cpu_supports_bf16

log = logging.getLogger(__name__)


def scoring_network(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` compiled by OpenVINO on a CPU where OpenVINO is installed (a frozen copy: later
    training steps do not reach it), else `net` itself."""
    if device.type != "cpu" or not openvino_available():
        return net
    precision: OVPrecision = "bf16" if cpu_supports_bf16() else "f32"
    log.info("scoring with OpenVINO (%s, %d thread(s))", precision, torch.get_num_threads())
    return OpenVINONet(convert_network(net), precision, torch.get_num_threads())
