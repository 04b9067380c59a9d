"""The network that validation scoring and point-label instances run: the engine's own back end
for this machine (`model.runtime.choose_runtime`, `model.predictors`), OpenVINO on a CPU that
has it, which is what `wsi-pipeline run` uses there.

Validation predicts whole images through the tiled path; PyTorch's eager CPU forward took 54 s
for one 1100² CRCHistoPhenotypes image on a 2-core AVX512-BF16 EPYC where OpenVINO took 5–8 s
(conversion ~10–40 s once per validation), so scoring 25 point-labelled images each validation
is affordable, and the scores are those of the path users run.
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_pipeline.model.network import MultiTaskNet
from wsi_pipeline.model.predictors import bare_model, load_predictor
from wsi_pipeline.model.runtime import choose_runtime


def scoring_network(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` prepared as inference prepares it on `device` (a copy: later training steps do
    not reach it), for `inference.image.predict_tiled`."""
    assert isinstance(net, MultiTaskNet), type(net)
    return load_predictor(bare_model(net), choose_runtime(device, "auto", "auto"), reuse=False).net
