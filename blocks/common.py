"""Small helpers shared by many blocks: activations by name, padding, conv+BN folding."""
from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
    "mish": nn.Mish, "identity": nn.Identity,
}


def activation(act: str | bool | None | nn.Module) -> nn.Module:
    """An activation module from a name ('silu', 'relu', ...), True (SiLU), or None/False (identity)."""
    if isinstance(act, nn.Module):
        return act
    if act is True:
        return nn.SiLU()
    if act in (None, False):
        return nn.Identity()
    try:
        return _ACTIVATIONS[str(act).lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; choose from {', '.join(_ACTIVATIONS)}") from None


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """'Same' padding for an odd kernel k with dilation d."""
    return d * (k - 1) // 2 if p is None else p


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias whose output equals bn(conv(x)) in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused
