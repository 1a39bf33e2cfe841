"""PResNet: ResNet-vd (Bag of Tricks for Image Classification with Convolutional Neural Networks), as RT-DETR uses it. CVPR 2019. https://arxiv.org/abs/1812.01187

ResNet-18/34/50/101 with the "d" tweaks (three 3x3 stem convs; 2x2 average pool before the 1x1
projection shortcut of a downsampling block), the official arguments (depth, variant, num_stages,
return_idx, act, freeze_at, freeze_norm, pretrained = a LOCAL checkpoint path) and the official
state-dict keys (conv1.conv1_1..., res_layers.<i>.blocks.<j>.branch2a...). Returns the stage
outputs in `return_idx`."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ArgumentError
from blocks.backbone._hgnetv2 import apply_freezing
from blocks.backbone._weights import load_local_weights
from blocks.common import activation
from blocks.registry import register

BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
STAGE_WIDTHS = [64, 128, 256, 512]
VARIANTS = ("a", "b", "c", "d")


def conv_norm(c_in: int, c_out: int, kernel: int, stride: int, act=None) -> nn.Sequential:
    """Conv (no bias), BN, activation. Not folded by deploy(): the official deploy model keeps the
    backbone's BN, and its parameter count is the reference."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False)),
        ("norm", nn.BatchNorm2d(c_out)),
        ("act", activation(act))]))


def _shortcut(c_in: int, c_out: int, stride: int, variant: str) -> nn.Module:
    if variant == "d" and stride == 2:  # average-pool first, so the 1x1 conv sees every pixel
        return nn.Sequential(OrderedDict([("pool", nn.AvgPool2d(2, 2, 0, ceil_mode=True)),
                                          ("conv", conv_norm(c_in, c_out, 1, 1))]))
    return conv_norm(c_in, c_out, 1, stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs and an identity (or projection) shortcut (ResNet-18/34)."""
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, shortcut: bool, act="relu", variant="d"):
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(c_in, width, stride, variant)
        self.branch2a = conv_norm(c_in, width, 3, stride, act)
        self.branch2b = conv_norm(width, width, 3, 1)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2b(self.branch2a(x))
        return self.act(out + (x if self.shortcut else self.short(x)))


class BottleNeck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) and a shortcut (ResNet-50/101); variant "a" strides the
    first 1x1, the others the 3x3."""
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, shortcut: bool, act="relu", variant="d"):
        super().__init__()
        stride1, stride2 = (stride, 1) if variant == "a" else (1, stride)
        self.branch2a = conv_norm(c_in, width, 1, stride1, act)
        self.branch2b = conv_norm(width, width, 3, stride2, act)
        self.branch2c = conv_norm(width, width * self.expansion, 1, 1)
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(c_in, width * self.expansion, stride, variant)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.act(out + (x if self.shortcut else self.short(x)))


class Stage(nn.Module):
    """`count` residual blocks; the first changes the width and (after stage 1) halves the size."""

    def __init__(self, block, c_in: int, width: int, count: int, downsample: bool, act="relu", variant="d"):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            self.blocks.append(block(c_in, width, 2 if i == 0 and downsample else 1, i > 0, act, variant))
            c_in = width * block.expansion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _block(depth: int):
    return BottleNeck if depth >= 50 else BasicBlock


def _out_channels(c_in, kwargs):
    expansion = _block(kwargs["depth"]).expansion
    return [STAGE_WIDTHS[i] * expansion for i in kwargs["return_idx"]]


@register("backbone", channels=_out_channels,
          example={"args": [18], "kwargs": {"return_idx": [1, 2, 3]}, "shape": (1, 3, 64, 64)})
class PResNet(nn.Module):
    def __init__(self, c1: int = 3, depth: int = 50, variant: str = "d", num_stages: int = 4,
                 return_idx=(0, 1, 2, 3), act="relu", freeze_at: int = -1, freeze_norm: bool = True,
                 pretrained: str | None = None):
        """freeze_at >= 0 stops training the stem and the first `freeze_at` stages (their parameters still
        count); freeze_norm turns every BN into a FrozenBatchNorm2d (buffers, not parameters)."""
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ArgumentError(f"depth must be one of {list(BLOCKS_PER_STAGE)}, got {depth}")
        if variant not in VARIANTS:
            raise ArgumentError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not 1 <= num_stages <= 4 or any(not 0 <= i < num_stages for i in return_idx):
            raise ArgumentError(f"return_idx {list(return_idx)} must name stages below num_stages={num_stages}")
        self.return_idx = list(return_idx)
        stem = 64
        if variant in ("c", "d"):
            layout = [(c1, stem // 2, 3, 2), (stem // 2, stem // 2, 3, 1), (stem // 2, stem, 3, 1)]
        else:
            layout = [(c1, stem, 7, 2)]
        self.conv1 = nn.Sequential(OrderedDict(
            (f"conv1_{i + 1}", conv_norm(ci, co, k, s, act)) for i, (ci, co, k, s) in enumerate(layout)))
        block, c_in = _block(depth), stem
        self.res_layers = nn.ModuleList()
        for i in range(num_stages):
            self.res_layers.append(Stage(block, c_in, STAGE_WIDTHS[i], BLOCKS_PER_STAGE[depth][i], i > 0, act, variant))
            c_in = STAGE_WIDTHS[i] * block.expansion
        if freeze_at >= 0:
            apply_freezing(self.conv1, True, False)
            for stage in self.res_layers[:min(freeze_at, num_stages)]:
                apply_freezing(stage, True, False)
        apply_freezing(self, False, freeze_norm)
        if pretrained:
            load_local_weights(self, pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)
        outputs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.return_idx:
                outputs.append(x)
        return outputs
