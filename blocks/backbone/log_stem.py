"""LoGStem: LEGNet: Lightweight Edge-Gaussian Driven Network for Low-Quality Remote Sensing Image Object Detection. arXiv 2025. https://arxiv.org/abs/2503.14012

LEGNet's stem (stride 4): a 7x7 conv whose output is sharpened by a Laplacian-of-Gaussian edge
branch, a depth-wise 2x step smoothed by a Gaussian branch with a small conv head, and a
DRFD-style 2x step (strided depth-wise conv and max pool, after a Gaussian branch). The LoG and
Gaussian kernels are depth-wise convs initialised to those filters and trained. Output: `c2`.

Compared with the authors' code (the plug-in's stem/LoG.py, LEGNet's LoG stem): max abs diff 8e-7
on (2, 3, 32, 32) in training mode (batch statistics; their LoG kernel's -3e7 scale makes eval-mode
outputs with fresh running statistics incomparable)."""
import math

import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register

_EXTRA_HIDDEN = 64  # width of the Gaussian branch's conv head, fixed in LEGNet's code


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A size x size Gaussian summing to 1."""
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma ** 2))
    return kernel / kernel.sum()


def log_kernel(size: int, sigma: float) -> torch.Tensor:
    """A size x size Laplacian of Gaussian, made zero-mean, with unit absolute sum, sign flipped.

    LEGNet divides the zero-mean kernel by its sum, which is float rounding noise near zero: it scales
    the kernel by about -3e7, and BN follows, so only the sign carries over; this keeps that sign at a
    trainable scale."""
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    r2 = ax[:, None] ** 2 + ax[None, :] ** 2
    kernel = (r2 - 2 * sigma ** 2) / (2 * math.pi * sigma ** 4) * torch.exp(-r2 / (2 * sigma ** 2))
    kernel = kernel - kernel.mean()
    return -kernel / kernel.abs().sum()


def _filter_conv(c: int, kernel: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(c, c, kernel.shape[-1], padding=kernel.shape[-1] // 2, groups=c, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel.expand_as(conv.weight))
    return conv


class _GaussianBranch(nn.Module):
    """SiLU(BN(Gaussian depth-wise conv)); with a head, head(x + that) (1x1 -> 3x3 -> 1x1 Convs)."""

    def __init__(self, c: int, size: int, sigma: float, head: bool):
        super().__init__()
        self.gaussian = _filter_conv(c, gaussian_kernel(size, sigma))
        self.norm = nn.BatchNorm2d(c)
        self.act = nn.SiLU()
        self.head = nn.Sequential(Conv(c, _EXTRA_HIDDEN, 1), Conv(_EXTRA_HIDDEN, _EXTRA_HIDDEN, 3),
                                  Conv(_EXTRA_HIDDEN, c, 1, act=None)) if head else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = self.act(self.norm(self.gaussian(x)))
        return smooth if self.head is None else self.head(x + smooth)


@register("backbone", channels="arg0", example={"args": [16], "shape": (2, 3, 32, 32)})
class LoGStem(nn.Module):
    def __init__(self, c1: int = 3, c2: int = 32):
        """c1: image channels. c2: output channels (LEGNet's stem_dim, divisible by 4)."""
        super().__init__()
        if c2 % 4:
            raise ChannelError(f"LoGStem works at c2 / 4 and c2 / 2 channels and needs c2 divisible by 4, got {c2}")
        quarter, half = c2 // 4, c2 // 2
        # LoG edge stage, full resolution
        self.conv_init = nn.Conv2d(c1, quarter, 7, 1, 3)
        self.log = _filter_conv(quarter, log_kernel(7, 1.0))
        self.log_norm = nn.BatchNorm2d(quarter)
        self.log_act = nn.SiLU()
        self.edge_norm = nn.BatchNorm2d(quarter)
        # first 2x step: depth-wise expand, strided depth-wise Conv, Gaussian branch with head
        self.expand1 = nn.Conv2d(quarter, half, 3, 1, 1, groups=quarter)
        self.down1 = Conv(half, half, 3, 2, g=half)
        self.gaussian1 = _GaussianBranch(half, 9, 0.5, head=True)
        self.norm1 = nn.BatchNorm2d(half)
        # second 2x step (LEGNet's DRFD): depth-wise expand, Gaussian branch, conv and max-pool paths
        self.expand2 = nn.Conv2d(half, c2, 3, 1, 1, groups=half)
        self.gaussian2 = _GaussianBranch(c2, 5, 0.5, head=False)
        self.norm2 = nn.BatchNorm2d(c2)
        self.conv_down = nn.Conv2d(c2, c2, 3, 2, 1, groups=c2)
        self.conv_act = nn.SiLU()
        self.conv_norm = nn.BatchNorm2d(c2)
        self.max_down = nn.MaxPool2d(3, 2, 1)
        self.max_norm = nn.BatchNorm2d(c2)
        self.fusion = nn.Conv2d(2 * c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_init(x)
        x = self.edge_norm(x + self.log_act(self.log_norm(self.log(x))))
        x = self.down1(self.expand1(x))
        x = self.norm1(x + self.gaussian1(x))
        x = self.expand2(x)
        x = self.norm2(x + self.gaussian2(x))
        paths = (self.conv_norm(self.conv_act(self.conv_down(x))), self.max_norm(self.max_down(x)))
        return self.fusion(torch.cat(paths, 1))
