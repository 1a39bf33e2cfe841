"""ScConv: SCConv: Spatial and Channel Reconstruction Convolution for Feature Redundancy. CVPR 2023. https://openaccess.thecvf.com/content/CVPR2023/html/Li_SCConv_Spatial_and_Channel_Reconstruction_Convolution_for_Feature_Redundancy_CVPR_2023_paper.html

A spatial reconstruction unit (GroupNorm-scale gating splits informative from redundant maps and
cross-adds them) then a channel reconstruction unit (split, squeeze, group-wise + point-wise convs,
pooled-softmax fusion). Keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register


class _SpatialReconstruction(nn.Module):
    def __init__(self, c: int, groups: int, threshold: float):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GN's per-channel scale, normalised to sum 1, says how much spatial information each map holds
        scale = (self.norm.weight / self.norm.weight.sum()).reshape(1, -1, 1, 1)
        weights = torch.sigmoid(self.norm(x) * scale)
        informative = torch.where(weights > self.threshold, torch.ones_like(weights), weights) * x
        redundant = torch.where(weights > self.threshold, torch.zeros_like(weights), weights) * x
        i1, i2 = informative.chunk(2, dim=1)
        r1, r2 = redundant.chunk(2, dim=1)
        return torch.cat((i1 + r2, i2 + r1), dim=1)


class _ChannelReconstruction(nn.Module):
    def __init__(self, c: int, alpha: float, squeeze: int, groups: int, k: int):
        super().__init__()
        self.split = (int(alpha * c), c - int(alpha * c))
        up, low = self.split[0] // squeeze, self.split[1] // squeeze
        self.squeeze_up = nn.Conv2d(self.split[0], up, 1, bias=False)
        self.squeeze_low = nn.Conv2d(self.split[1], low, 1, bias=False)
        self.group_wise = nn.Conv2d(up, c, k, 1, k // 2, groups=groups)
        self.point_wise_up = nn.Conv2d(up, c, 1, bias=False)
        self.point_wise_low = nn.Conv2d(low, c - low, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, low = x.split(self.split, dim=1)
        up, low = self.squeeze_up(up), self.squeeze_low(low)
        y = torch.cat((self.group_wise(up) + self.point_wise_up(up), self.point_wise_low(low), low), dim=1)
        y = F.softmax(F.adaptive_avg_pool2d(y, 1), dim=1) * y
        y1, y2 = y.chunk(2, dim=1)
        return y1 + y2


@register("conv", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class ScConv(nn.Module):
    def __init__(self, c: int, gn_groups: int = 4, gate_threshold: float = 0.5, alpha: float = 0.5,
                 squeeze: int = 2, conv_groups: int = 2, k: int = 3):
        super().__init__()
        self.sru = _SpatialReconstruction(c, gn_groups, gate_threshold)
        self.cru = _ChannelReconstruction(c, alpha, squeeze, conv_groups, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cru(self.sru(x))
