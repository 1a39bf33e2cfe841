"""LEGBlock: LEGNet: Lightweight Edge-Gaussian Driven Network for Low-Quality Remote Sensing Image Object Detection. arXiv 2025. https://arxiv.org/abs/2503.14012

LEGNet's LFE module: an edge prior (depth-wise Scharr x/y filters combined as a gradient magnitude,
in the first stage) or a Gaussian prior (a depth-wise 5x5 Gaussian, sigma 1, in later stages), each
BN-ReLU and refined by a 1x1-3x3-1x1 conv stack; the LFEA fusion (c * prior + c, a 3x3 conv-BN-ReLU,
ECA-style channel weights from a 1-D conv, BN of c + weighted features), then a 1x1 MLP with BN and
a residual. Keeps channels. The Scharr and Gaussian kernels initialise ordinary conv weights, which
train like the rest, as in the authors' code.
Compared with the authors' code (AeroVILab-AHU/LEGNet mmrotate/models/backbones/legnet.py LFE_Module,
BN norms, ReLU): max abs diff 0 on (2, 32, 16, 16), Gaussian and Scharr variants."""
import math

import torch
from torch import nn

from blocks.common import activation
from blocks.conv.conv import Conv
from blocks.registry import register

_SCHARR_X = ((-3.0, 0.0, 3.0), (-10.0, 0.0, 10.0), (-3.0, 0.0, 3.0))


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(-size // 2 + 1, size // 2 + 1, dtype=torch.float32)
    kernel = torch.exp(-(ax[None, :] ** 2 + ax[:, None] ** 2) / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
    return kernel / kernel.sum()


def _fixed_depthwise(c: int, kernel: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(c, c, kernel.shape[-1], padding=kernel.shape[-1] // 2, groups=c, bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel.expand(c, 1, *kernel.shape))
    return conv


def _refine(c: int, act) -> nn.Sequential:
    """The authors' Conv_Extra: 1x1 to 64, 3x3, 1x1 back, BN after each (64 is fixed in their code)."""
    return nn.Sequential(Conv(c, 64, 1, act=act, bias=True), Conv(64, 64, 3, act=act), Conv(64, c, 1, act=None, bias=True))


class EdgePrior(nn.Module):
    """Scharr gradient magnitude -> BN-act, added to x and refined."""

    def __init__(self, c: int, act):
        super().__init__()
        scharr = torch.tensor(_SCHARR_X)
        self.conv_x = _fixed_depthwise(c, scharr)
        self.conv_y = _fixed_depthwise(c, scharr.t())
        self.norm, self.act = nn.BatchNorm2d(c), activation(act)
        self.refine = _refine(c, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edge = torch.sqrt(self.conv_x(x) ** 2 + self.conv_y(x) ** 2)
        return self.refine(x + self.act(self.norm(edge)))


class GaussianPrior(nn.Module):
    """Depth-wise Gaussian blur -> BN-act, added to x and refined."""

    def __init__(self, c: int, act, size: int = 5, sigma: float = 1.0):
        super().__init__()
        self.gaussian = Conv(c, c, size, g=c, act=act)
        with torch.no_grad():
            self.gaussian.conv.weight.copy_(_gaussian_kernel(size, sigma).expand(c, 1, size, size))
        self.refine = _refine(c, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(x + self.gaussian(x))


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class LEGBlock(nn.Module):
    def __init__(self, c: int, edge: bool = False, mlp_ratio: float = 2.0, act="relu"):
        """c: channels; edge: the Scharr edge prior (LEGNet's first stage) instead of the Gaussian prior
        (later stages); mlp_ratio: MLP width / c; act: activation throughout (ReLU in LEGNet)."""
        super().__init__()
        self.prior = EdgePrior(c, act) if edge else GaussianPrior(c, act)
        t = int(abs((math.log(c, 2) + 1) / 2))
        k = t if t % 2 else t + 1  # the ECA kernel size rule
        self.fuse_conv = Conv(c, c, 3, act=act)
        self.channel_conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.fuse_norm = nn.BatchNorm2d(c)
        hidden = int(c * mlp_ratio)
        self.mlp = nn.Sequential(Conv(c, hidden, 1, act=act), nn.Conv2d(hidden, c, 1, bias=False))
        self.norm = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prior = self.prior(x)
        fused = self.fuse_conv(x * prior + x)
        weight = self.channel_conv(fused.mean(dim=(2, 3))[:, None, :]).transpose(1, 2)[..., None]
        y = self.fuse_norm(x + fused * torch.sigmoid(weight))
        return x + self.norm(self.mlp(y))
