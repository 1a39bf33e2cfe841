"""CGAFusion: DEA-Net: Single Image Dehazing Based on Detail-Enhanced Convolution and Content-Guided Attention. IEEE TIP 2024. https://arxiv.org/abs/2301.04805

Content-guided attention on x + y (channel + spatial maps refined into a per-channel pixel map by
a 7x7 grouped conv) gates the mix p * x + (1 - p) * y, added to x + y, then a 1x1 conv.
Two same-size inputs, projected to `c2` channels where needed."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.neck._align import channel_aligners
from blocks.registry import register


@register("neck", channels="arg0", example={"args": [16], "shapes": [(2, 16, 16, 16), (2, 8, 16, 16)]})
class CGAFusion(nn.Module):
    def __init__(self, c_in: list, c2: int, reduction: int = 8):
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"CGAFusion fuses two inputs, got {len(c_in)}")
        self.align = channel_aligners(c_in, c2)
        self.channel_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c2, max(c2 // reduction, 1), 1),
                                               nn.ReLU(), nn.Conv2d(max(c2 // reduction, 1), c2, 1))
        self.spatial_attention = nn.Conv2d(2, 1, 7, padding=3, padding_mode="reflect")
        # input channels interleaved as (x_c, attention_c) pairs, one group per channel
        self.pixel_attention = nn.Conv2d(2 * c2, c2, 7, padding=3, padding_mode="reflect", groups=c2)
        self.conv = nn.Conv2d(c2, c2, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x, y = (align(t) for align, t in zip(self.align, xs))
        initial = x + y
        spatial = self.spatial_attention(torch.cat((initial.mean(1, keepdim=True), initial.amax(1, keepdim=True)), 1))
        coarse = spatial + self.channel_attention(initial)
        pairs = torch.stack((initial, coarse.expand_as(initial)), 2).flatten(1, 2)
        gate = self.pixel_attention(pairs).sigmoid()
        return self.conv(initial + gate * x + (1 - gate) * y)
