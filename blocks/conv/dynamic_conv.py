"""DynamicConv: ParameterNet: Parameters Are All You Need for Large-scale Visual Pretraining of Mobile Networks. CVPR 2024. https://arxiv.org/abs/2306.14525

A conv whose kernel is a per-image mixture of M expert kernels, weighted by a sigmoid routing of the
globally pooled input: many more parameters for almost no extra FLOPs. BN + activation follow."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation, autopad
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 16, 16)})
class DynamicConv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, d: int = 1, act="silu",
                 num_experts: int = 4):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = s, autopad(k, None, d), d, g
        self.routing = nn.Linear(c1, num_experts)
        self.experts = nn.Parameter(torch.empty(num_experts, c2, c1 // g, k, k))
        for expert in self.experts:  # each expert starts like an ordinary conv
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        routing = torch.sigmoid(self.routing(F.adaptive_avg_pool2d(x, 1).flatten(1)))    # (B, M)
        kernels = torch.einsum("bm,moikl->boikl", routing, self.experts)                # (B, c2, c1/g, k, k)
        # one grouped conv over the batch folded into channels applies each image's own kernel
        y = F.conv2d(x.reshape(1, b * c, h, w), kernels.flatten(0, 1), None, self.stride, self.padding,
                     self.dilation, self.groups * b)
        return self.act(self.norm(y.reshape(b, -1, *y.shape[-2:])))
