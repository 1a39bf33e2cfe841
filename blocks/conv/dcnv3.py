"""DCNv3: InternImage: Exploring Large-Scale Vision Foundation Models with Deformable Convolutions. CVPR 2023. https://arxiv.org/abs/2211.05778

Grouped deformable conv with shared projection weights: offsets and softmax-normalised (per group,
over the k*k points) masks come from a depth-wise conv + LN + GELU of the input; value and output are
linear projections. Pure-PyTorch grid_sample path. BN + activation follow, as a Conv."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation
from blocks.conv._dcn_core import deform_sample
from blocks.registry import register
from core.errors import ConfigError


class _ChannelsLastLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map, returned channels-last (N, H, W, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1))


@register("conv", channels="arg0", example={"args": [32, 3, 2], "shape": (2, 16, 16, 16)})
class DCNv3(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, groups: int = 4, offset_scale: float = 1.0,
                 dw_k: int | None = None, act="silu"):
        super().__init__()
        if c2 % groups:
            raise ConfigError(f"DCNv3 needs output channels divisible by groups, got {c2} and {groups}")
        self.k, self.stride, self.groups, self.offset_scale = k, s, groups, offset_scale
        dw_k = dw_k or k
        points = groups * k * k
        self.value_proj = nn.Linear(c1, c2)
        # the stride lives in the depth-wise conv so offsets come out at the output resolution
        self.dw = nn.Sequential(nn.Conv2d(c1, c1, dw_k, s, (dw_k - 1) // 2, groups=c1),
                                _ChannelsLastLayerNorm(c1, eps=1e-6), nn.GELU())
        self.offset = nn.Linear(c1, 2 * points)
        self.mask = nn.Linear(c1, points)
        self.output_proj = nn.Linear(c2, c2)
        for layer in (self.offset, self.mask):  # start from the regular grid with uniform masks
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.norm = nn.BatchNorm2d(c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value_proj(x.permute(0, 2, 3, 1))
        query = self.dw(x)
        n, h, w, _ = query.shape
        mask = F.softmax(self.mask(query).reshape(n, h, w, self.groups, -1), dim=-1).reshape(n, h, w, -1)
        y = deform_sample(value, self.offset(query), mask, self.k, self.stride, self.k // 2, 1, self.groups,
                          self.offset_scale)
        y = self.output_proj(y).permute(0, 3, 1, 2)
        return self.act(self.norm(y))
