"""DPCF: SAMamba: Adaptive State Space Modeling with Hierarchical Vision for Infrared Small Target Detection. Information Fusion 2025. https://arxiv.org/abs/2505.23214

Detail-preserving contextual fusion, in the DEIM plug-in's form: brings the low-resolution map to
the high-resolution one's width (1x1 Conv where they differ) and size (bilinear, corners aligned),
blends the two with one learnable sigmoid weight (w * low + (1 - w) * high) and applies a 1x1 Conv
to `c2` channels.

Compared with the authors' code (the plug-in's featurefusion/DPCF.py): max abs diff 0 on
[(2, 32, 8, 8), (2, 16, 16, 16)]. That code blends four channel chunks with one shared weight, which
is the same as blending the whole maps, so the chunks are not split here; it resizes to a square of
the high map's height, here to its height and width."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [32], "shapes": [(2, 32, 8, 8), (2, 16, 16, 16)]})
class DPCF(nn.Module):
    def __init__(self, c_in: list, c2: int):
        """c_in: [low-resolution, high-resolution] channels. c2: output channels."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"DPCF fuses two inputs [low, high], got {len(c_in)}")
        self.align = Conv(c_in[0], c_in[1], 1) if c_in[0] != c_in[1] else nn.Identity()
        self.blend = nn.Parameter(torch.randn(1))
        self.proj = Conv(c_in[1], c2, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        low, high = xs
        low = F.interpolate(self.align(low), size=high.shape[-2:], mode="bilinear", align_corners=True)
        weight = torch.sigmoid(self.blend)
        return self.proj(weight * low + (1 - weight) * high)
