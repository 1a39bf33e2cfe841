"""CGFM: Context-Guided Fusion Module (ContextGuideFusionModule), the DEIM plug-in project's own module. 2025. https://github.com/z1069614715/objectdetection_script/blob/master/cvpr2025-deim-project.md

Two same-size maps (the first projected to the second's width by a 1x1 Conv where they differ)
are concatenated and re-weighted by squeeze-and-excitation; each map is then multiplied by its
re-weighted half and added to the other map, and the two sums are concatenated; a 1x1 Conv sets `c2`
channels where needed.

Compared with the authors' code (the plug-in's featurefusion/cgfm.py): max abs diff 0 on
[(2, 32, 16, 16), (2, 16, 16, 16)]. As in that code the SE output (already x * gate) is multiplied
by x again, so the cross terms are x^2 * gate."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [32], "shapes": [(2, 32, 16, 16), (2, 16, 16, 16)]})
class CGFM(nn.Module):
    def __init__(self, c_in: list, c2: int, reduction: int = 16):
        """c_in: the two inputs' channels. c2: output channels (no output conv when it is 2 * c_in[1]).
        reduction: SE bottleneck ratio (bias-free linear layers, as in the code)."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"CGFM fuses two inputs, got {len(c_in)}")
        width = c_in[1]
        self.align = Conv(c_in[0], width, 1) if c_in[0] != width else nn.Identity()
        self.squeeze = nn.Sequential(nn.Linear(2 * width, max(2 * width // reduction, 1), bias=False), nn.ReLU(),
                                     nn.Linear(max(2 * width // reduction, 1), 2 * width, bias=False), nn.Sigmoid())
        self.proj = Conv(2 * width, c2, 1) if 2 * width != c2 else nn.Identity()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x0, x1 = self.align(xs[0]), xs[1]
        both = torch.cat((x0, x1), 1)
        both = both * self.squeeze(both.mean((2, 3)))[..., None, None]
        w0, w1 = both.split((x0.shape[1], x1.shape[1]), 1)
        return self.proj(torch.cat((x0 + x1 * w1, x1 + x0 * w0), 1))
