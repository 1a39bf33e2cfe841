"""FasterBlock: Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks. CVPR 2023. https://arxiv.org/abs/2303.03667

Partial 3x3 conv on the first 1/n_div of the channels (the rest pass untouched), then a
1x1-BN-ReLU-1x1 MLP, with a residual; keeps the channels."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


class PartialConv(nn.Module):
    """3x3 conv over the first c // n_div channels only (FasterNet's PConv, 'split_cat' form)."""

    def __init__(self, c: int, n_div: int = 4):
        super().__init__()
        self.c_conv = c // n_div
        self.conv = nn.Conv2d(self.c_conv, self.c_conv, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convolved, kept = x.split([self.c_conv, x.shape[1] - self.c_conv], 1)
        return torch.cat((self.conv(convolved), kept), 1)


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class FasterBlock(nn.Module):
    def __init__(self, c: int, n_div: int = 4, mlp_ratio: float = 2.0, layer_scale_init: float = 0.0):
        super().__init__()
        hidden = int(c * mlp_ratio)
        self.spatial_mixing = PartialConv(c, n_div)
        self.mlp = nn.Sequential(Conv(c, hidden, 1, act="relu"), nn.Conv2d(hidden, c, 1, bias=False))
        # FasterNet-L and up use a layer scale; the small variants do not (0 = off)
        self.layer_scale = nn.Parameter(layer_scale_init * torch.ones(c, 1, 1)) if layer_scale_init > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.spatial_mixing(x))
        return x + (self.layer_scale * y if self.layer_scale is not None else y)
