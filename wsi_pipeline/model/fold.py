"""Batch-norm folding: an inference copy of the network with every BatchNorm merged into its conv.

In eval mode a BatchNorm is a per-channel affine map, so conv → BN equals one conv with scaled
weights and a bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`). Measured on the shipped network
(benchmarks/model_speed.py) BN was ~12 % of a CPU forward pass, and under bf16 autocast each BN,
upsample and concatenation also cast its activations between bf16 and fp32; without BN the
whole network can hold bf16 weights and run without autocast (`model.predictors.torch_predictor`).
Training keeps the unfolded network: folding is only valid with frozen statistics.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from wsi_pipeline.model.resnet import BasicBlock


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of `net` in eval mode with each BatchNorm2d folded into the Conv2d before it.

    Pairs are the adjacent (Conv2d, BatchNorm2d) of every nn.Sequential and the two conv/BN
    pairs of every ResNet `BasicBlock`. A BatchNorm left over means an architecture this
    function does not know: that is an error, not a silently slower or wrong copy.
    """
    net = copy.deepcopy(net).eval()
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                conv, bn = module[i], module[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[i], module[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
        elif isinstance(module, BasicBlock):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                fused = fuse_conv_bn_eval(getattr(module, conv_name), getattr(module, bn_name))
                module.register_module(conv_name, fused)
                module.register_module(bn_name, nn.Identity())
    left = [name for name, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"fold_batchnorm: no conv to fold into for {', '.join(left)}")
    return net
