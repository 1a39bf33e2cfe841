"""DCNv4: Efficient Deformable ConvNets: Rethinking Dynamic and Sparse Operator for Vision Applications. CVPR 2024. https://arxiv.org/abs/2401.06197

DCNv3 without the softmax (unbounded dynamic weights) and with one linear layer predicting offsets
and weights together. Pure-PyTorch grid_sample path. BN + activation follow, as a Conv."""
import math

import torch
from torch import nn

from blocks.common import activation
from blocks.conv._dcn_core import deform_sample
from blocks.registry import register
from core.errors import ConfigError


@register("conv", channels="arg0", example={"args": [32, 3, 1], "shape": (2, 16, 16, 16)})
class DCNv4(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, groups: int = 4, offset_scale: float = 1.0,
                 dw_k: int | None = None, act="silu"):
        super().__init__()
        if c2 % groups:
            raise ConfigError(f"DCNv4 needs output channels divisible by groups, got {c2} and {groups}")
        if s > 1 and dw_k is None:
            raise ConfigError("DCNv4 with stride > 1 needs dw_k",
                              hint="offsets are predicted per output pixel; a strided depth-wise conv "
                                   "(dw_k: 3) brings the input to the output resolution")
        self.k, self.stride, self.groups, self.offset_scale = k, s, groups, offset_scale
        self.points = k * k
        self.value_proj = nn.Linear(c1, c2)
        self.dw = nn.Conv2d(c1, c1, dw_k, s, (dw_k - 1) // 2, groups=c1) if dw_k else None
        # per group: 2P offsets then P weights; the official layer rounds its width up to a multiple of 8
        self.offset_mask = nn.Linear(c1, math.ceil(3 * groups * self.points / 8) * 8)
        self.output_proj = nn.Linear(c2, c2)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value_proj(x.permute(0, 2, 3, 1))
        query = (self.dw(x) if self.dw is not None else x).permute(0, 2, 3, 1)
        n, h, w, _ = query.shape
        g, p = self.groups, self.points
        offset_mask = self.offset_mask(query)[..., :3 * g * p].reshape(n, h, w, g, 3 * p)
        offset, mask = offset_mask.split([2 * p, p], dim=-1)
        y = deform_sample(value, offset.reshape(n, h, w, -1), mask.reshape(n, h, w, -1), self.k, self.stride,
                          self.k // 2, 1, g, self.offset_scale)
        y = self.output_proj(y).permute(0, 3, 1, 2)
        return self.act(self.norm(y))
