"""MPCA: Spatial-Frequency Dual Progressive Attention Network For Medical Image Segmentation. BIBM 2024. https://arxiv.org/abs/2406.07952

Multi-scale progressive channel attention of SF-UNet: ECA-style 1-D convs over each input's pooled
channels, then one over both, give sigmoid channel gates; the gated second map is brought to the
first's size (stride-2 transposed conv, or a stride-2 conv with down=True) and added to the gated
first map; a 1x1 Conv sets `c2` channels where needed.

Compared with the authors' code (the plug-in's featurefusion/mpca.py, SF-UNet's MPCA): max abs diff
0 for both MultiScalePCA (up) and MultiScalePCA_Down on (2, 32, 16, 16) beside (2, 16, 8, 8) / (2, 16, 32, 32)."""
import math

import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


def eca_kernel(channels: int, gamma: int, bias: int) -> int:
    """ECA-Net's adaptive 1-D kernel size: the odd number nearest above |log2(C) + b| / gamma."""
    k = int(abs((math.log(channels, 2) + bias) / gamma))
    return k if k % 2 else k + 1


def _channel_conv(k: int) -> nn.Conv1d:
    return nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)


@register("neck", channels="arg0", example={"args": [32], "shapes": [(2, 32, 16, 16), (2, 16, 8, 8)]})
class MPCA(nn.Module):
    def __init__(self, c_in: list, c2: int, down: bool = False, gamma: int = 2, bias: int = 1):
        """c_in: [first, second] channels. c2: output channels. down: the second map is twice the first's
        size (MultiScalePCA_Down) rather than half (MultiScalePCA). gamma, bias: ECA kernel-size rule."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"MPCA fuses two inputs, got {len(c_in)}")
        self.split = tuple(c_in)
        self.conv_first = _channel_conv(eca_kernel(c_in[0], gamma, bias))
        self.conv_second = _channel_conv(eca_kernel(c_in[1], gamma, bias))
        self.conv_both = _channel_conv(eca_kernel(c_in[0] + c_in[1], gamma, bias))
        self.resize = (nn.Conv2d(c_in[1], c_in[0], 3, 2, 1) if down
                       else nn.ConvTranspose2d(c_in[1], c_in[0], 3, 2, 1, output_padding=1))
        self.proj = Conv(c_in[0], c2, 1) if c_in[0] != c2 else nn.Identity()

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        first, second = xs
        pooled = torch.cat((self.conv_first(first.mean((2, 3))[:, None]),
                            self.conv_second(second.mean((2, 3))[:, None])), 2)      # (B, 1, C1 + C2)
        gate_first, gate_second = torch.sigmoid(self.conv_both(pooled))[:, 0].split(self.split, 1)
        out = first * gate_first[..., None, None] + self.resize(second * gate_second[..., None, None])
        return self.proj(out)
