"""PKIModule: Poly Kernel Inception Network for Remote Sensing Detection. CVPR 2024. https://arxiv.org/abs/2403.06258

PKINet's inception bottleneck: a 1x1 conv, a depth-wise k0 x k0 conv whose output is summed with
depth-wise convs of the larger kernels (3, 5, 7, 9, 11 by default) applied to it, a 1x1 conv, then
context anchor attention (CAA: 7x7 average pool, 1x1 conv, depth-wise 1 x 11 and 11 x 1 band convs,
1x1 conv, sigmoid, computed from the pre-conv features) re-weights the result (x + x * attn with the
identity, else x * attn), and a 1x1 conv gives c2. Conv-BN-SiLU throughout (BN eps 1e-3, momentum
0.03, as in PKINet); the hidden width is rounded to a multiple of 8. Output width c2 (channel rule "arg0").
Compared with the authors' code (NUST-Machine-Intelligence-Laboratory/PKINet
mmrotate/models/backbones/pkinet.py InceptionBottleneck, mmcv ConvModule as conv-BN-SiLU):
max abs diff 9e-8 on (2, 32, 16, 16)."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import register


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """Round to the nearest multiple of divisor, never more than 10 % below value (mmcv's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < min_ratio * value else rounded


def _conv_bn_act(c1: int, c2: int, k: int = 1, act="silu") -> Conv:
    conv = Conv(c1, c2, k, act=act)
    conv.norm.eps, conv.norm.momentum = 1e-3, 0.03
    return conv


class ContextAnchorAttention(nn.Module):
    """sigmoid(1x1(v-band(h-band(1x1(avgpool7(x)))))): a long-range, strip-shaped attention factor."""

    def __init__(self, c: int, k: int = 11):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1)
        self.h_conv = nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c)
        self.v_conv = nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c)
        self.conv2 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv2(self.v_conv(self.h_conv(self.conv1(F.avg_pool2d(x, 7, 1, 3))))))


@register("backbone", channels="arg0", example={"args": [32], "shape": (2, 32, 16, 16)})
class PKIModule(nn.Module):
    def __init__(self, c1: int, c2: int, kernel_sizes=(3, 5, 7, 9, 11), dilations=(1, 1, 1, 1, 1),
                 expansion: float = 1.0, add_identity: bool = True, with_caa: bool = True, caa_kernel_size: int = 11):
        """c1, c2: input and output channels; kernel_sizes, dilations: the depth-wise kernels (the first
        runs on the input, the rest on its output); expansion: hidden width / c2 (rounded to 8);
        add_identity: x + x * attn rather than x * attn (identity kept only when c1 == c2); with_caa:
        the context anchor attention (else attn is the pre-conv features themselves); caa_kernel_size:
        length of its band kernels."""
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ArgumentError(f"PKIModule: {len(kernel_sizes)} kernel sizes but {len(dilations)} dilations")
        hidden = make_divisible(int(c2 * expansion), 8)
        self.pre_conv = _conv_bn_act(c1, hidden, 1)
        self.dw_convs = nn.ModuleList(nn.Conv2d(hidden, hidden, k, 1, d * (k - 1) // 2, d, groups=hidden)
                                      for k, d in zip(kernel_sizes, dilations))
        self.pw_conv = _conv_bn_act(hidden, hidden, 1)
        self.caa = ContextAnchorAttention(hidden, caa_kernel_size) if with_caa else None
        self.add_identity = add_identity and c1 == c2
        self.post_conv = _conv_bn_act(hidden, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_conv(x)
        y = self.dw_convs[0](x)
        y = self.pw_conv(y + sum(conv(y) for conv in self.dw_convs[1:]))
        attn = self.caa(x) if self.caa is not None else x
        return self.post_conv(y + y * attn if self.add_identity else y * attn)
