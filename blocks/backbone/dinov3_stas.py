"""DINOv3STAs: DINOv3 / distilled ViT backbone with the Spatial Tuning Adapter (Real-Time Object Detection Meets DINOv3). arXiv 2025. https://arxiv.org/abs/2509.20787

DEIMv2-S..X backbone: a ViT (DEIMv2's ViT-Tiny/Tiny+, or DINOv3 ViT-S/16, S+/16) whose stride-16
tokens at three block indices are resized to strides 8, 16 and 32, concatenated with the
SpatialPriorModule's detail maps, and projected by 1x1 conv + BN to hidden_dim. Official
DINOv3STAs arguments; `weights_path` is a LOCAL checkpoint of the ViT alone (never downloaded)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from blocks.common import fuse_conv_bn
from core.errors import ArgumentError
from blocks.backbone._vit import DINOV3_ARCHS, DINOv3ViT, ViTTiny
from blocks.backbone._weights import load_local_weights
from blocks.backbone.spatial_prior_module import SpatialPriorModule
from blocks.registry import register


def _channels(c_in, kw):
    embed = DINOV3_ARCHS[kw["name"]][0] if kw["name"] in DINOV3_ARCHS else kw["embed_dim"]
    return [kw["hidden_dim"] or embed] * 3


@register("backbone", channels=_channels, example={
    "kwargs": {"name": "vit_tiny", "embed_dim": 32, "num_heads": 2, "interaction_indexes": [0, 1, 2],
               "conv_inplane": 4, "hidden_dim": 16, "depth": 3}, "shape": (1, 3, 64, 64)})
class DINOv3STAs(nn.Module):
    def __init__(self, c1: int = 3, name: str = "vit_tiny", weights_path: str | None = None,
                 interaction_indexes=(3, 7, 11), finetune: bool = True, embed_dim: int = 192, num_heads: int = 3,
                 patch_size: int = 16, use_sta: bool = True, conv_inplane: int = 16, hidden_dim: int | None = None,
                 depth: int = 12):
        super().__init__()
        if c1 != 3:
            raise ArgumentError(f"DINOv3STAs reads the RGB image (3 channels), got {c1}")
        if name in DINOV3_ARCHS:
            self.dinov3 = DINOv3ViT(name, interaction_indexes, patch_size, depth)
        elif name in ("vit_tiny", "vit_tinyplus"):
            self.dinov3 = ViTTiny(embed_dim, num_heads, interaction_indexes, patch_size, depth)
        else:
            raise ArgumentError(f"unknown ViT {name!r}; choose from vit_tiny, vit_tinyplus, {', '.join(DINOV3_ARCHS)}")
        if weights_path:
            load_local_weights(self.dinov3.weights_target, weights_path, allow_unexpected=False)
        if not finetune:
            self.dinov3.requires_grad_(False)
        embed_dim = self.dinov3.embed_dim
        detail = (2 * conv_inplane, 4 * conv_inplane, 4 * conv_inplane) if use_sta else (0, 0, 0)
        if use_sta:
            self.sta = SpatialPriorModule(3, conv_inplane)
        hidden_dim = hidden_dim or embed_dim
        self.convs = nn.ModuleList(nn.Conv2d(embed_dim + c, hidden_dim, 1, bias=False) for c in detail)
        self.norms = nn.ModuleList(nn.BatchNorm2d(hidden_dim) for _ in detail)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        batch, height, width = x.shape[0], x.shape[2] // 16, x.shape[3] // 16
        tokens = self.dinov3(x)
        if len(tokens) == 1:  # one tapped block serves all three scales
            tokens = tokens * 3
        features = []
        for i, level in enumerate(tokens):
            grid = level.transpose(1, 2).reshape(batch, -1, height, width)
            scale = 2.0 ** (1 - i)  # strides 8, 16, 32 from the stride-16 tokens
            features.append(F.interpolate(grid, size=[int(height * scale), int(width * scale)], mode="bilinear",
                                          align_corners=False))
        if hasattr(self, "sta"):
            features = [torch.cat([f, d], dim=1) for f, d in zip(features, self.sta(x))]
        return [norm(conv(f)) for conv, norm, f in zip(self.convs, self.norms, features)]

    def fold_bn(self):
        """Inference form beyond the official deploy: each output BN folded into its 1x1 conv."""
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if not isinstance(norm, nn.Identity):
                self.convs[i], self.norms[i] = fuse_conv_bn(conv, norm), nn.Identity()
