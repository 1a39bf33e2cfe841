"""MobileMamba: MobileMamba: Lightweight Multi-Receptive Visual Mamba Network (its multi-receptive field feature interaction module, MRFFI). CVPR 2025. https://arxiv.org/abs/2411.15941

The channels are split three ways: a global share (about global_ratio, rounded to a multiple of 16)
through wavelet-enhanced Mamba (a two-route bidirectional selective scan of the map, scaled, plus
WTConv-style depth-wise convs on its Haar sub-bands); a local share (local_ratio) through a k x k
depth-wise conv-BN-ReLU and a depth-wise 1x1 conv-BN; the rest passes untouched. Concatenated,
ReLU, 1x1 conv-BN. Token mixer on (B, C, H, W); keeps channels. MobileMamba zero-initialises the last
BN's weight inside its residual block; here it starts at 1 so the block also works as a plain row
(MetaFormer gives it a residual). The released two-route merge adds one route's output broadcast over
the batch (exact only for batch 1); here each image merges its own two routes. Pure-PyTorch scan on CPU
(mamba_ssm's kernel on CUDA when installed).
Compared with the authors' code (lewandofskee/MobileMamba model/mobilemamba.py MobileMambaModule with
model/lib_mamba/vmambanew.py SS2D, forward type v052d, run through its own torch scan fallbacks):
max abs diff 1.2e-7 on (1, 64, 8, 8), random weights and BN statistics."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv._haar import wavelet_band_path
from blocks.conv.conv import Conv
from blocks.mamba._scan import route_scan
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register

ROUTES = 2


class _BidirectionalSS2D(nn.Module):
    """MobileMamba's SS2D (VMamba v05, two routes): 1x1 conv-BN to x and gate z, 3x3 depth-wise conv,
    SiLU, row-major scan both ways, LayerNorm, times SiLU(z), 1x1 conv-BN back. Initialised as
    MobileMamba does (A = -1, D = 1, dt weights and bias uniform in [0, 0.1))."""

    def __init__(self, c: int, d_state: int = 1, ssm_ratio: float = 1.0, d_conv: int = 3):
        super().__init__()
        inner = int(ssm_ratio * c)
        self.dt_rank = math.ceil(c / 16)
        self.in_proj = Conv(c, 2 * inner, 1, act=None)
        self.conv2d = nn.Conv2d(inner, inner, d_conv, padding=(d_conv - 1) // 2, groups=inner)
        self.x_proj_weight = nn.Parameter(torch.empty(ROUTES, self.dt_rank + 2 * d_state, inner))
        nn.init.kaiming_uniform_(self.x_proj_weight, a=math.sqrt(5))
        self.dt_projs_weight = nn.Parameter(0.1 * torch.rand(ROUTES, inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(0.1 * torch.rand(ROUTES, inner))
        self.A_logs = nn.Parameter(torch.zeros(ROUTES * inner, d_state))
        self.Ds = nn.Parameter(torch.ones(ROUTES * inner))
        self.out_norm = LayerNorm2d(inner)
        self.out_proj = Conv(inner, c, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x, z = self.in_proj(x).chunk(2, 1)
        x = F.silu(self.conv2d(x))
        y = route_scan(x.float(), self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs.float(),
                       self.Ds.float(), routes="bidi").reshape(b, -1, h, w).to(x.dtype)
        return self.out_proj(self.out_norm(y) * F.silu(z))


class _WaveletMamba(nn.Module):
    """MobileMamba's WTE-Mamba: scaled global scan plus the Haar sub-band path of WTConv (one level)."""

    def __init__(self, c: int, kernel: int, ssm_ratio: float, d_state: int):
        super().__init__()
        self.global_atten = _BidirectionalSS2D(c, d_state, ssm_ratio)
        self.base_scale = nn.Parameter(torch.ones(1, c, 1, 1))
        self.band_convs = nn.ModuleList([nn.Conv2d(4 * c, 4 * c, kernel, padding="same", groups=4 * c, bias=False)])
        self.band_scales = nn.ParameterList([nn.Parameter(torch.full((1, 4 * c, 1, 1), 0.1))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_scale * self.global_atten(x) + wavelet_band_path(x, self.band_convs, self.band_scales)


def _global_width(c: int, ratio: float) -> int:
    """ratio * c rounded to the nearest multiple of 16 (ties upwards), as MobileMamba does."""
    share = int(ratio * c)
    lower = share // 16 * 16
    return lower if share - lower < 8 else lower + 16


@register("mamba", channels="same", example={"args": [], "shape": (2, 64, 8, 8)})
class MobileMamba(nn.Module):
    def __init__(self, c: int, global_ratio: float = 0.25, local_ratio: float = 0.25, kernels: int = 3,
                 ssm_ratio: float = 1.0, d_state: int = 1):
        """global_ratio / local_ratio: shares of the channels for the global (rounded to a multiple of 16;
        none below 32 channels at 0.25) and local branches; kernels: kernel of the local conv and of the
        sub-band convs; ssm_ratio, d_state: the scan's width / share and state size (MobileMamba: 1, 1)."""
        super().__init__()
        self.global_channels = _global_width(c, global_ratio)
        local = int(local_ratio * c)
        self.local_channels = c - self.global_channels if self.global_channels + local > c else local
        self.split = (self.global_channels, self.local_channels, c - self.global_channels - self.local_channels)
        self.global_op = _WaveletMamba(self.global_channels, kernels, ssm_ratio, d_state) if self.global_channels \
            else nn.Identity()
        self.local_op = nn.Sequential(
            Conv(self.local_channels, self.local_channels, kernels, g=self.local_channels, act="relu"),
            Conv(self.local_channels, self.local_channels, 1, g=self.local_channels, act=None)) \
            if self.local_channels else nn.Identity()
        self.proj = nn.Sequential(nn.ReLU(), Conv(c, c, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_global, x_local, x_rest = x.split(self.split, 1)
        return self.proj(torch.cat((self.global_op(x_global), self.local_op(x_local), x_rest), 1))
