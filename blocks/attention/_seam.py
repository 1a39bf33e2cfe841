"""Pieces shared by SEAM and MultiSEAM (YOLO-FaceV2): the depth-wise separable residual unit and the exp channel head."""
import torch
from torch import nn


class DepthwiseSeparableUnit(nn.Module):
    """(dw k x k conv -> GELU -> BN) + x, then pw 1x1 conv -> GELU -> BN: SEAM's conv mixer."""

    def __init__(self, c: int, kernel_size: int = 3):
        super().__init__()
        self.depthwise = nn.Sequential(nn.Conv2d(c, c, kernel_size, padding=kernel_size // 2, groups=c),
                                       nn.GELU(), nn.BatchNorm2d(c))
        self.pointwise = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU(), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x) + x)


class ExpChannelHead(nn.Module):
    """Bottleneck MLP + sigmoid on a pooled vector, then exp: channel weights in [1, e] (YOLO-FaceV2)."""

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, c // reduction)
        self.fc = nn.Sequential(nn.Linear(c, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, c, bias=False),
                                nn.Sigmoid())
        for layer in self.fc:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.001)  # the authors' init: weights start near exp(0.5)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(self.fc(pooled))[:, :, None, None]
