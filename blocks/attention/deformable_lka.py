"""DeformableLKA: Beyond Self-Attention: Deformable Large Kernel Attention for Medical Image Segmentation. WACV 2024. https://arxiv.org/abs/2309.00121

The deformable LKA unit: a 5x5 and a 7x7 (dilation 3) depth-wise DEFORMABLE conv, each with its own
offset conv, then a 1x1 conv; the result multiplies the input. Pure PyTorch via torchvision's deform_conv2d."""
import torch
from torch import nn

from blocks.common import deform_conv2d
from blocks.registry import register


class DeformableDepthwiseConv(nn.Module):
    """A depth-wise k x k conv sampling at learned offsets (one offset field shared by all channels)."""

    def __init__(self, c: int, kernel_size: int, padding: int, dilation: int = 1):
        super().__init__()
        self.padding, self.dilation = padding, dilation
        self.offset = nn.Conv2d(c, 2 * kernel_size * kernel_size, kernel_size, padding=padding, dilation=dilation)
        self.weight = nn.Parameter(torch.empty(c, 1, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv2d's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, self.offset(x), self.weight, padding=self.padding, dilation=self.dilation)


@register("attention", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class DeformableLKA(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv0 = DeformableDepthwiseConv(c, 5, padding=2)
        self.conv_spatial = DeformableDepthwiseConv(c, 7, padding=9, dilation=3)
        self.conv1 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))
