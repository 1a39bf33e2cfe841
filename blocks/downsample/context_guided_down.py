"""ContextGuidedDown: CGNet: A Light-weight Context Guided Network for Semantic Segmentation. IEEE TIP 2021. https://arxiv.org/abs/1811.08201

The down-sampling Context Guided block: a strided 3x3 conv, then a local (3x3 depth-wise) and a
surrounding-context (dilated 3x3 depth-wise) feature, joined, reduced by a 1x1 conv and re-weighted by
a global-context channel gate."""
import torch
from torch import nn

from blocks.registry import register


@register("downsample", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class ContextGuidedDown(nn.Module):
    def __init__(self, c1: int, c2: int, dilation: int = 2, reduction: int = 16):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2, eps=1e-3), nn.PReLU(c2))
        self.local = nn.Conv2d(c2, c2, 3, 1, 1, groups=c2, bias=False)
        self.surround = nn.Conv2d(c2, c2, 3, 1, dilation, dilation, groups=c2, bias=False)
        self.joint = nn.Sequential(nn.BatchNorm2d(2 * c2, eps=1e-3), nn.PReLU(2 * c2))
        self.reduce = nn.Conv2d(2 * c2, c2, 1, bias=False)
        hidden = max(c2 // reduction, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, hidden), nn.ReLU(),
                                  nn.Linear(hidden, c2), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        joint = self.reduce(self.joint(torch.cat((self.local(x), self.surround(x)), dim=1)))
        return joint * self.gate(joint)[:, :, None, None]
