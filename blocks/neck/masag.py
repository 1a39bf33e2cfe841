"""MASAG: MSA²Net: Multi-scale Adaptive Attention-guided Network for Medical Image Segmentation. BMVC 2024. https://arxiv.org/abs/2407.21640

Multi-scale adaptive spatial attention gate: local context of x (depth-wise 3x3, dilated 3x3,
1x1) plus global channel-pooled context of g choose per pixel between x and g (softmax over two
paths); the gated paths interact through sigmoid cross-gating and re-weight x. Inputs [x, g] of
one size, projected to `c2` channels where needed."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.neck._align import channel_aligners
from blocks.registry import register


def _conv_bn(c1: int, c2: int, k: int = 1, d: int = 1, g: int = 1, relu: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c1, c2, k, padding=d * (k - 1) // 2, dilation=d, groups=g), nn.BatchNorm2d(c2)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 16, 16, 16), (2, 16, 16, 16)]})
class MASAG(nn.Module):
    def __init__(self, c_in: list, c2: int):
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"MASAG fuses two inputs [x, g], got {len(c_in)}")
        self.align = channel_aligners(c_in, c2)
        self.local_context = nn.Sequential(_conv_bn(c2, c2, 3, g=c2, relu=True), _conv_bn(c2, c2, 3, d=2, relu=True),
                                           _conv_bn(c2, c2))
        self.global_context = _conv_bn(2, 1)          # from channel-mean and channel-max maps of g
        self.fuse_norm = nn.BatchNorm2d(c2)
        self.selection = nn.Conv2d(c2, 2, 1)
        self.proj = _conv_bn(c2, c2)
        self.out = _conv_bn(c2, c2)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x, g = (align(t) for align, t in zip(self.align, xs))
        if x.shape[-2:] != g.shape[-2:]:
            raise ArgumentError(f"MASAG fuses [x, g] of one size, got {tuple(x.shape[-2:])} and {tuple(g.shape[-2:])}",
                                hint="resize one of them first (an nn.Upsample or a downsample row)")
        pooled = torch.cat((g.mean(1, keepdim=True), g.amax(1, keepdim=True)), 1)
        context = self.fuse_norm(self.local_context(x) + self.global_context(pooled))
        pick_x, pick_g = self.selection(context).softmax(1).split(1, 1)
        x_att, g_att = x + pick_x * x, g + pick_g * g
        interaction = (x_att.sigmoid() * g_att) * (g_att.sigmoid() * x_att)
        return self.out(self.proj(interaction).sigmoid() * x)
