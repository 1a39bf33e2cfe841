"""DilatedGCSA: Rethinking Transformer-Based Blind-Spot Network for Self-Supervised Image Denoising (TBSN's dilated grouped channel-wise self-attention). AAAI 2025. https://arxiv.org/abs/2404.07846

1x1 conv, then a 3x3 depth-wise conv with dilation 2 for q, k, v; attention among the channels of
each group (head) over the whole map, softmax with a learnable temperature per group; 1x1
projection. Token mixer on (B, C, H, W); keeps channels. (TBSN's code names this DilatedMDTA; the
DEIM plug-in project's DilatedGCSA file holds TBSN's masked window attention instead, which is
DilatedMWSA here.)
Compared with the authors' code (nagejacob/TBSN network/tbsn.py, DilatedMDTA): max abs diff 0.0 (random weights) on (2, 32, 8, 8)."""
import torch
from torch import nn

from blocks.registry import register
from blocks.transformer._attention_parts import channel_attention, check_heads


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 32, 8, 8)})
class DilatedGCSA(nn.Module):
    def __init__(self, c: int, num_heads: int = 4, bias: bool = False):
        """num_heads: the channel groups attended separately (TBSN uses 1, 2, 4 by level); must divide c."""
        super().__init__()
        check_heads("DilatedGCSA", c, num_heads)
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=2, dilation=2, groups=3 * c, bias=bias)
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, 1)
        return self.project_out(channel_attention(q, k, v, self.num_heads, self.temperature))
