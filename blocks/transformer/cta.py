"""CTA: FreqFormer: Frequency-aware Transformer for Lightweight Image Super-resolution (channel transposed attention). IJCAI 2024. https://www.ijcai.org/proceedings/2024/81

Channel attention per head over the whole map (XCiT form: L2-normalised q, k, learnable temperature)
beside a 1x1 + 3x3 depth-wise conv branch on v; the two cross-gate each other: the conv branch's
S-Map gates the attention, the attention's C-Map (pooled) gates the conv branch; summed, linear
projection. Token mixer on (B, C, H, W); keeps channels.
Compared with the authors' code (JPWang-CS/FreqFormer basicsr/archs/freqformer_arch.py,
Channel_Transposed_Attention): max abs diff 4e-14 on (2, 60, 8, 8) in float64, random weights."""
import torch
from torch import nn

from blocks.registry import register
from blocks.transformer._attention_parts import channel_attention, check_heads
from blocks.transformer._freqformer import ChannelProjection, SpatialProjection, check_width


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 32, 8, 8)})
class CTA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, qkv_bias: bool = False):
        """c: at least 12 channels; num_heads must divide c."""
        super().__init__()
        check_heads("CTA", c, num_heads)
        check_width("CTA", c)
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(c, 3 * c, bias=qkv_bias)
        self.proj = nn.Linear(c, c)
        self.channel_projection = ChannelProjection(c)
        self.spatial_projection = SpatialProjection(c)
        self.dwconv = nn.Sequential(nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1, groups=c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, 3 * c, h, w).chunk(3, 1)
        attended = channel_attention(q, k, v, self.num_heads, self.temperature)
        conv = self.dwconv(v)
        channel_map = self.channel_projection(attended)
        attended = (attended + channel_map) * torch.sigmoid(self.spatial_projection(conv))
        conv = conv * torch.sigmoid(channel_map.mean((2, 3), keepdim=True))
        out = self.proj((attended + conv).flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(b, c, h, w)
