"""HSFPNFusion: Accurate Leukocyte Detection Based on Deformable-DETR and Multi-Level Feature Fusion (MFDS-DETR, HS-FPN). Computers in Biology and Medicine 2024. https://arxiv.org/abs/2401.00926

One top-down step of HS-FPN: feature selection on the low-level map (channel attention from
average- and max-pooled descriptors, then a 1x1 conv to `c2`), and selective feature fusion: the
high-level map, upsampled by a 3x3 transposed conv, yields channel weights for the low-level map
and is added to it. Inputs [low-level (large), high-level (half size)]."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.registry import register


class ChannelAttention(nn.Module):
    """sigmoid(MLP(avgpool x) + MLP(maxpool x)), the MLP shared, as HS-FPN's feature selection."""

    def __init__(self, c: int, ratio: int = 4):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(c, max(c // ratio, 1), 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(max(c // ratio, 1), c, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))).sigmoid()


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 16, 16, 16), (2, 32, 8, 8)]})
class HSFPNFusion(nn.Module):
    def __init__(self, c_in: list, c2: int, ratio: int = 4):
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"HSFPNFusion fuses [low-level, high-level], got {len(c_in)} inputs")
        c_low, c_high = c_in
        self.select_attention = ChannelAttention(c_low, ratio)
        self.select_proj = nn.Conv2d(c_low, c2, 1)
        self.upsample = nn.ConvTranspose2d(c_high, c2, 3, 2, 1, output_padding=1)
        self.fusion_attention = ChannelAttention(c2, ratio)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        low, high = xs
        low = self.select_proj(low * self.select_attention(low))
        high = self.upsample(high)
        if high.shape[-2:] != low.shape[-2:]:  # odd sizes: HS-FPN completes the resize bilinearly
            high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return low * self.fusion_attention(high) + high
