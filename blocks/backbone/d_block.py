"""DBlock: DarkIR: Robust Low-Light Image Restoration. CVPR 2025. https://arxiv.org/abs/2412.13443

DarkIR's decoder block: LayerNorm, a 1x1 expansion, an optional grouped 3x3 conv, parallel depth-wise
3x3 convs with dilation 1, 4 and 9 (summed), SimpleGate and simplified channel attention, a 1x1
projection and a residual scaled by beta; then LayerNorm, a gated 1x1 FFN (SimpleGate) and a residual
scaled by gamma. beta and gamma start at zero (the block starts as identity). Keeps channels.
Compared with the authors' code (cidautai/DarkIR archs/arch_model.py DBlock, dilations (1, 4, 9) and
extra_depth_wise=True as in DarkIR): max abs diff 2e-7 on (2, 32, 16, 16)."""
import torch
from torch import nn

from blocks.backbone._darkir import DilatedGatedMixer, simple_gate
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class DBlock(nn.Module):
    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, dilations=(1, 4, 9), extra_depth_wise: bool = True):
        """c: channels; dw_expand: width of the dilated convs / c; ffn_expand: FFN width / c (halved by
        the gate); dilations: one depth-wise branch per rate; extra_depth_wise: a 3x3 conv with c groups
        after the expansion."""
        super().__init__()
        width = dw_expand * c
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.conv1 = nn.Conv2d(c, width, 1)
        self.extra_conv = nn.Conv2d(width, width, 3, padding=1, groups=c) if extra_depth_wise else nn.Identity()
        self.mixer = DilatedGatedMixer(width, c, dilations)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        self.conv4 = nn.Conv2d(c, ffn_expand * c, 1)
        self.conv5 = nn.Conv2d(ffn_expand * c // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.beta * self.mixer(self.extra_conv(self.conv1(self.norm1(x))))
        return y + self.gamma * self.conv5(simple_gate(self.conv4(self.norm2(y))))
