"""LiteEncoder: Real-Time Object Detection Meets DINOv3 (DEIMv2's encoder for Atto/Femto/Pico). arXiv 2025. https://arxiv.org/abs/2509.20787

Two-level encoder without attention: the single stride-16 input is projected to hidden_dim, an
average-pool + 1x1 conv makes the stride-32 level, which is fused with its global mean; then one
top-down and one bottom-up RepNCSPELAN4 (levels added, not concatenated). Returns [P16, P32].
Keys match the official `encoder.` state dict."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ArgumentError
from blocks.common import activation
from blocks.conv.conv import Conv
from blocks.encoder.rep_ncsp_elan4 import RepNCSPELAN4
from blocks.registry import register


def _pooled_downsample(dim: int, act) -> nn.Sequential:
    # plain conv + BN (the official deploy keeps this BN unfused, so its parameter count does too)
    return nn.Sequential(nn.AvgPool2d(kernel_size=3, stride=2, padding=1), nn.Conv2d(dim, dim, 1, bias=False),
                         nn.BatchNorm2d(dim), activation(act))


class GlobalPoolFusion(nn.Module):
    """x + its global average, then a 1x1 conv-BN-act (YOLOv6's BiFusion as DEIMv2 uses it)."""

    def __init__(self, dim: int, act="silu"):
        super().__init__()
        self.cv = Conv(dim, dim, 1, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv(x + F.adaptive_avg_pool2d(x, 1))


@register("encoder", channels=lambda c_in, kw: [kw["hidden_dim"]] * 2,
          example={"kwargs": {"hidden_dim": 32, "expansion": 0.34, "depth_mult": 0.5}, "shape": (2, 48, 16, 16)})
class LiteEncoder(nn.Module):
    def __init__(self, in_channels=(512,), feat_strides=(16,), hidden_dim: int = 256, expansion: float = 1.0,
                 depth_mult: float = 1.0, act="silu", eval_spatial_size=None, csp_type: str = "csp2"):
        super().__init__()
        in_channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        if len(in_channels) != 1 or len(feat_strides) != 1:
            raise ArgumentError(f"LiteEncoder reads one feature map (got {len(in_channels)} inputs, "
                             f"feat_strides {list(feat_strides)})")
        self.input_proj = nn.ModuleList(
            nn.Sequential(OrderedDict([("conv", nn.Conv2d(c, hidden_dim, 1, bias=False)),
                                       ("norm", nn.BatchNorm2d(hidden_dim))]))
            for c in in_channels)
        self.down_sample1 = _pooled_downsample(hidden_dim, act)
        self.down_sample2 = _pooled_downsample(hidden_dim, act)
        self.bi_fusion = GlobalPoolFusion(hidden_dim, act)
        width, depth = round(expansion * hidden_dim // 2), round(3 * depth_mult)
        self.fpn_block = RepNCSPELAN4(hidden_dim, hidden_dim, hidden_dim * 2, width, depth, act=act, csp_type=csp_type)
        self.pan_block = RepNCSPELAN4(hidden_dim, hidden_dim, hidden_dim * 2, width, depth, act=act, csp_type=csp_type)

    def forward(self, feats) -> list[torch.Tensor]:
        fine = self.input_proj[0](feats[0] if isinstance(feats, (list, tuple)) else feats)
        coarse = self.bi_fusion(self.down_sample1(fine))
        top_down = self.fpn_block(fine + F.interpolate(coarse, scale_factor=2.0, mode="nearest"))
        bottom_up = self.pan_block(coarse + self.down_sample2(top_down))
        return [top_down, bottom_up]
