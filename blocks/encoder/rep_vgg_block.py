"""RepVggBlock: RepVGG: Making VGG-style ConvNets Great Again. CVPR 2021. https://arxiv.org/abs/2101.03697

Parallel 3x3 and 1x1 conv-BN branches summed, then the activation (RT-DETR/D-FINE form, no
identity branch); `fuse()` merges both branches into one 3x3 conv with bias."""
import torch
from torch import nn
from torch.nn import functional as F

from blocks.common import act_in_place, activation, fuse_conv_bn
from blocks.conv.conv import Conv
from blocks.registry import register


def _equivalent_conv(branch: Conv) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv equal to a Conv branch in eval mode (BN folded or not yet)."""
    conv = fuse_conv_bn(branch.conv, branch.norm) if isinstance(branch.norm, nn.BatchNorm2d) else branch.conv
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    return conv.weight, bias


@register("encoder", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class RepVggBlock(nn.Module):
    def __init__(self, c1: int, c2: int, act="relu"):
        super().__init__()
        self.conv1 = Conv(c1, c2, 3, 1, act=None)
        self.conv2 = Conv(c1, c2, 1, 1, act=None)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def fuse(self):
        act_in_place(self.act)
        if hasattr(self, "conv"):
            return
        w3, b3 = _equivalent_conv(self.conv1)
        w1, b1 = _equivalent_conv(self.conv2)
        self.conv = nn.Conv2d(w3.shape[1], w3.shape[0], 3, 1, 1).to(w3.device, w3.dtype)
        self.conv.weight.copy_(w3 + F.pad(w1, [1, 1, 1, 1]))
        self.conv.bias.copy_(b3 + b1)
        del self.conv1, self.conv2
