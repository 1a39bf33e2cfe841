"""RepConv: RepVGG: Making VGG-style ConvNets Great Again. CVPR 2021. https://arxiv.org/abs/2101.03697

Trains a 3x3 conv+BN, a 1x1 conv+BN and (when shapes allow) an identity BN in parallel; `fuse()`
folds the three branches into one 3x3 conv."""
import torch
from torch import nn

from blocks.common import activation
from blocks.conv._reparam import conv_kernel_bias, fold_bn, identity_kernel, merged_conv, pad_kernel
from blocks.conv.conv import Conv
from blocks.registry import register


@register("conv", channels="arg0", example={"args": [32, 3, 1], "shape": (2, 32, 16, 16)})
class RepConv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, g: int = 1, act="relu", identity: bool = True):
        super().__init__()
        self.dense = Conv(c1, c2, k, s, g=g, act=None)
        self.pointwise = Conv(c1, c2, 1, s, p=0, g=g, act=None)
        # the identity branch exists only where input and output line up (RepVGG's "bn" branch)
        self.identity = nn.BatchNorm2d(c2) if identity and c1 == c2 and s == 1 else None
        self.act = activation(act)
        self.reparam = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.act(self.reparam(x))
        y = self.dense(x) + self.pointwise(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        size = self.dense.conv.kernel_size[0]
        kernel, bias = conv_kernel_bias(self.dense)
        k1, b1 = conv_kernel_bias(self.pointwise)
        kernel, bias = kernel + pad_kernel(k1, size), bias + b1
        if self.identity is not None:
            eye = identity_kernel(kernel.shape[0], self.dense.conv.groups, size, kernel.device)
            ki, bi = fold_bn(eye, self.identity)
            kernel, bias = kernel + ki, bias + bi
        self.reparam = merged_conv(self.dense.conv, kernel, bias)
        del self.dense, self.pointwise, self.identity
