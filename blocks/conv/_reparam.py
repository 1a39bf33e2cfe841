"""Kernel algebra shared by the re-parameterisable conv blocks (RepConv, DBB, DilatedReparamConv).

Every branch is reduced to an equivalent (kernel, bias) pair; the sum of those pairs is one conv."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None):
    """(kernel, bias) of bn(conv(x)) in eval mode, for a conv with this kernel and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    return kernel * scale.reshape(-1, 1, 1, 1), (bias - bn.running_mean) * scale + bn.bias


def conv_kernel_bias(module: nn.Module):
    """(kernel, bias) of a blocks Conv (conv + BN, or already fused) with its activation ignored."""
    conv = module.conv
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
    if isinstance(module.norm, nn.BatchNorm2d):
        return fold_bn(conv.weight, module.norm, conv.bias)
    return conv.weight, bias


def pad_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a centred k x k kernel to size x size."""
    pad = (size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad] * 4)


def identity_kernel(channels: int, groups: int, size: int, device=None) -> torch.Tensor:
    """A size x size (grouped) kernel whose conv is the identity map."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, size, size, device=device)
    kernel[torch.arange(channels), torch.arange(channels) % per_group, size // 2, size // 2] = 1.0
    return kernel


def merged_conv(template: nn.Conv2d, kernel: torch.Tensor, bias: torch.Tensor, padding=None) -> nn.Conv2d:
    """A conv with bias shaped like `template` (stride, groups, dilation) holding kernel and bias."""
    conv = nn.Conv2d(template.in_channels, template.out_channels, kernel.shape[-2:], template.stride,
                     template.padding if padding is None else padding, template.dilation, template.groups,
                     bias=True).to(kernel.device, kernel.dtype)
    conv.weight.data.copy_(kernel.detach())
    conv.bias.data.copy_(bias.detach())
    return conv
