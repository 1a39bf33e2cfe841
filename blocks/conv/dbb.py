"""DBB: Diverse Branch Block: Building a Convolution as an Inception-like Unit. CVPR 2021. https://arxiv.org/abs/2103.13425

Trains four branches (kxk, 1x1, 1x1->kxk, 1x1->avg), each ending in BN, and applies the activation
to their sum; `fuse()` turns the four branches into one kxk conv."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation, autopad
from blocks.conv._reparam import conv_kernel_bias, fold_bn, identity_kernel, merged_conv, pad_kernel
from blocks.conv.conv import Conv
from blocks.registry import register


class _BNPad(nn.BatchNorm2d):
    """BN, then a border of `pad` pixels filled with what BN maps a zero input to.

    Padding after BN (instead of zero-padding before the next kxk conv) is what keeps the
    1x1 -> kxk sequence exactly equal to one kxk conv at the image border."""

    def __init__(self, channels: int, pad: int):
        super().__init__(channels)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.pad == 0:
            return y
        fill = self.bias - self.running_mean * self.weight / torch.sqrt(self.running_var + self.eps)
        fill = fill.reshape(1, -1, 1, 1)
        y = F.pad(y, [self.pad] * 4)
        inside = torch.zeros_like(y[:1, :1])
        inside[..., self.pad:-self.pad, self.pad:-self.pad] = 1
        return y + (1 - inside) * fill


def _compose(k1: torch.Tensor, b1: torch.Tensor, k2: torch.Tensor, b2: torch.Tensor, groups: int):
    """(kernel, bias) of conv_k2(conv_k1(x) + b1) + b2 where k1 is 1x1; grouped convs per group."""
    out1, out2 = k1.shape[0] // groups, k2.shape[0] // groups
    kernels, biases = [], []
    for g in range(groups):
        first = k1[g * out1:(g + 1) * out1]                 # (out1, in/g, 1, 1)
        second = k2[g * out2:(g + 1) * out2]                # (out2, out1, k, k)
        kernels.append(F.conv2d(second, first.permute(1, 0, 2, 3)))
        biases.append((second * b1[g * out1:(g + 1) * out1].reshape(1, -1, 1, 1)).sum((1, 2, 3)))
    return torch.cat(kernels), torch.cat(biases) + b2


@register("conv", channels="arg0", example={"args": [32, 3, 1], "shape": (2, 16, 16, 16)})
class DBB(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act="silu",
                 internal: int | None = None):
        super().__init__()
        pad = autopad(k)
        self.kernel_size, self.groups = k, g
        self.origin = Conv(c1, c2, k, s, g=g, act=None)
        # depth-wise layers (g == c2) have no separate 1x1 branch and a bare average pool (paper, Fig. 2)
        self.one = Conv(c1, c2, 1, s, p=0, g=g, act=None) if g < c2 else None
        self.avg_first = (nn.Sequential(nn.Conv2d(c1, c2, 1, groups=g, bias=False), _BNPad(c2, pad))
                          if g < c2 else None)
        self.avg = nn.AvgPool2d(k, s, padding=0 if g < c2 else pad)
        self.avg_bn = nn.BatchNorm2d(c2)
        internal = internal or (c1 if g < c2 else 2 * c1)
        self.seq_first = nn.Conv2d(c1, internal, 1, groups=g, bias=False)
        if internal == c1:  # start the 1x1 of the 1x1->kxk branch at the identity (paper, Sec. 3.4)
            nn.init.zeros_(self.seq_first.weight)
            self.seq_identity = True
        else:
            self.seq_identity = False
        self.seq_bn1 = _BNPad(internal, pad)
        self.seq_second = nn.Conv2d(internal, c2, k, s, 0, groups=g, bias=False)
        self.seq_bn2 = nn.BatchNorm2d(c2)
        self.act = activation(act)
        self.reparam = None

    def _seq_first_kernel(self) -> torch.Tensor:
        kernel = self.seq_first.weight
        if self.seq_identity:
            kernel = kernel + identity_kernel(kernel.shape[0], self.groups, 1, kernel.device)
        return kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.act(self.reparam(x))
        return self.act(self.branch_sum(x))

    def branch_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of the training-time branches, before the activation (WDBB adds its own to it)."""
        y = self.origin(x)
        if self.one is not None:
            y = y + self.one(x)
        z = self.avg_first(x) if self.avg_first is not None else x
        y = y + self.avg_bn(self.avg(z))
        z = F.conv2d(x, self._seq_first_kernel(), groups=self.groups)
        return y + self.seq_bn2(self.seq_second(self.seq_bn1(z)))

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        k, g = self.kernel_size, self.groups
        kernel, bias = conv_kernel_bias(self.origin)
        if self.one is not None:
            k1, b1 = conv_kernel_bias(self.one)
            kernel, bias = kernel + pad_kernel(k1, k), bias + b1
        # 1x1 -> kxk
        k_first, b_first = fold_bn(self._seq_first_kernel(), self.seq_bn1)
        k_second, b_second = fold_bn(self.seq_second.weight, self.seq_bn2)
        ks, bs = _compose(k_first, b_first, k_second, b_second, g)
        kernel, bias = kernel + ks, bias + bs
        # (1x1 ->) average pool: the pool is a kxk conv with 1/k^2 on each group's own channel
        c2 = kernel.shape[0]
        k_avg = identity_kernel(c2, g, 1, kernel.device).expand(-1, -1, k, k) / (k * k)
        k_avg, b_avg = fold_bn(k_avg, self.avg_bn)
        if self.avg_first is not None:
            k_pre, b_pre = fold_bn(self.avg_first[0].weight, self.avg_first[1])
            k_avg, b_avg = _compose(k_pre, b_pre, k_avg, b_avg, g)
        kernel, bias = kernel + k_avg, bias + b_avg
        self.reparam = merged_conv(self.origin.conv, kernel, bias)
        del self.origin, self.one, self.avg_first, self.avg, self.avg_bn
        del self.seq_first, self.seq_bn1, self.seq_second, self.seq_bn2
