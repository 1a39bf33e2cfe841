"""SEFN: SEM-Net: Efficient Pixel Modelling for Image Inpainting with Spatially Enhanced SSM (spatially-enhanced FFN). WACV 2025. https://arxiv.org/abs/2411.06318

A gated-dconv FFN whose GELU branch is fused (1x1 conv + 3x3 depth-wise conv) with a spatial context
branch: the `spatial` map average-pooled by 2, two 3x3 conv + LayerNorm + ReLU, upsampled back.
Input: x alone (spatial = x) or [x, spatial] with equal channels (SEM-Net passes the block's input
before its mixer as `spatial`); keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


@register("mlp", channels="first", inputs=(1, 2), example={"args": [], "shapes": [(2, 16, 16, 16), (2, 16, 16, 16)]})
class SEFN(nn.Module):
    def __init__(self, c, ffn_expansion_factor: float = 2, bias: bool = False):
        super().__init__()
        c = c[0] if isinstance(c, (list, tuple)) else c
        hidden = int(c * ffn_expansion_factor)
        self.project_in = nn.Conv2d(c, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.fusion = nn.Conv2d(hidden + c, hidden, 1, bias=bias)
        self.dwconv_afterfusion = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, c, 1, bias=bias)
        self.pool = nn.AvgPool2d(2, ceil_mode=True)  # ceil: odd sides and 1x1 maps keep every pixel
        self.spatial_conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), LayerNorm2d(c), nn.ReLU(),
                                          nn.Conv2d(c, c, 3, padding=1), LayerNorm2d(c), nn.ReLU())

    def forward(self, x) -> torch.Tensor:
        x, spatial = x if isinstance(x, (list, tuple)) else (x, x)
        context = self.spatial_conv(self.pool(spatial))
        # nearest x2 upsampling, cropped to x on odd sides
        context = F.interpolate(context, size=x.shape[-2:], mode="nearest")
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, 1)
        x1 = self.dwconv_afterfusion(self.fusion(torch.cat([x1, context], 1)))
        return self.project_out(F.gelu(x1) * x2)
