"""Small helpers shared by many blocks: activations by name, padding, conv+BN folding."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from core.errors import ArgumentError

_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid, "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
    "mish": nn.Mish, "identity": nn.Identity,
}


def activation(act: str | bool | None | nn.Module) -> nn.Module:
    """An activation from a name ('silu', 'relu', ...), True (SiLU), None/False (identity), a module,
    or a factory (a nested `{module: nn.ReLU}` row argument)."""
    if isinstance(act, nn.Module):
        return act
    if callable(act) and not isinstance(act, (str, bool)):
        return act()
    if act is True:
        return nn.SiLU()
    if act in (None, False):
        return nn.Identity()
    try:
        return _ACTIVATIONS[str(act).lower()]()
    except KeyError:
        raise ArgumentError(f"unknown activation {act!r}; choose from {', '.join(_ACTIVATIONS)}") from None


def act_in_place(act: nn.Module) -> None:
    """Let an activation overwrite its input, for a unit's deploy form: there its input is always the
    unit's own fresh conv output, and an in-place pass saves allocating (and faulting in) another map."""
    if hasattr(act, "inplace"):
        act.inplace = True


def deform_conv2d(*args, **kwargs) -> torch.Tensor:
    """torchvision.ops.deform_conv2d, imported on first call: importing torchvision costs a process
    2-3 s (its ops import torch._dynamo), which graphs without a deformable conv, and
    `python -m analyze.info`, need not pay."""
    from torchvision.ops import deform_conv2d as torchvision_deform_conv2d

    return torchvision_deform_conv2d(*args, **kwargs)


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


def build_inner(factory, c: int) -> nn.Module:
    """Build a nested block (a graph's `{module: Name, args: {...}}` factory, or a class) that keeps `c` channels.

    Containers (C2f, MetaFormerBlock, ...) call this for their inner block: a block whose output
    width is its first argument ("arg0") gets (c, c), one that keeps its channels gets (c)."""
    from blocks.registry import ChannelError, get

    name = getattr(factory, "block_name", None)
    if name is None or name.startswith("nn."):
        return factory(c)
    spec = get(name)
    if not spec.takes_c_in:
        return factory()
    if getattr(factory, "args", ()):
        raise ChannelError(f"nested block {name} must take its args as a dict",
                           hint=f"write {{module: {name}, args: {{name: value}}}}; the container passes the channels")
    widths = (c, c) if spec.channels == "arg0" and spec.out_param not in factory.keywords else (c,)
    bound = spec.signature.bind(*widths, **factory.keywords)
    bound.apply_defaults()
    if spec.out_channels(c, dict(bound.arguments)) != c:
        raise ChannelError(f"nested block {name} changes the channels ({c} in)",
                           hint="a container's inner block must keep its input channels")
    return factory(*widths)


def is_batch_norm_2d(module: nn.Module) -> bool:
    """A 2-d batch norm in eval form (torch's, or a frozen one holding its statistics as buffers)."""
    return isinstance(module, nn.BatchNorm2d) or (
        type(module).__name__ == "FrozenBatchNorm2d" and all(
            hasattr(module, name) for name in ("weight", "bias", "running_mean", "running_var", "eps")))


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every remaining conv -> BN pair of an eval-mode model into the conv (the BN becomes Identity).

    Two places hold such pairs: adjacent `Conv2d, BatchNorm2d` entries of an `nn.Sequential` (ResNet
    conv_norm units, decoder input projections, adapter stems), and blocks that apply `bn(conv(x))`
    from named attributes, which say so with a `fold_bn()` method (HGNetv2's ConvBNAct, DINOv3STAs).
    The official deploy() keeps these BNs; folding them changes the output by float rounding only."""
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
                if type(conv) is nn.Conv2d and is_batch_norm_2d(norm):
                    module._modules[conv_name] = fuse_conv_bn(conv, norm)
                    module._modules[norm_name] = nn.Identity()
        elif callable(getattr(type(module), "fold_bn", None)):
            module.fold_bn()
    return model


def fuse_modules(model: nn.Module) -> nn.Module:
    """Call `fuse()` on `model` and every submodule that defines it, innermost first.

    `fuse()` is the blocks' one inference hook: fold BN into convs, re-parameterise multi-branch
    blocks, drop training-only parts. Each block fuses only itself; its children are visited first."""
    for module in reversed(list(model.modules())):
        if callable(getattr(type(module), "fuse", None)):
            module.fuse()
    return model


def deploy_form(model: nn.Module, fold: bool = True, channels_last: bool = True) -> nn.Module:
    """A module's inference form, in place: eval mode, every block's `fuse()`, then (with `fold`) every
    remaining conv+BN pair folded and (with `channels_last`) the conv weights stored channels-last, so
    the convolutions run in that layout whatever the input's (8-13 % off a DEIM-N forward on this
    project's CPU). Outputs equal the eval form's to float rounding."""
    model.eval()
    fuse_modules(model)
    if fold:
        fold_batch_norms(model)
        if channels_last:
            for module in model.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
    return model


class StarReLU(nn.Module):
    """s * relu(x)^2 + b with learnable scalars s, b (MetaFormer baselines)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias
