"""GSA: Efficient Face Super-Resolution via Wavelet-based Feature Enhancement Network (WFEN's global self-attention). ACM MM 2024. https://arxiv.org/abs/2407.19768

1x1 + 3x3 depth-wise q, k, v; attention among the channels of each head over the whole map, with
ReLU in place of softmax and one learnable temperature; heads interleaved back channel-wise, 1x1
projection. Token mixer on (B, C, H, W); keeps channels.
Compared with the authors' code (PRIS-CV/WFEN models/arch/wfen.py, GSA): max abs diff 0.0 (random weights) on (2, 32, 8, 8)."""
import torch
from torch import nn

from blocks.registry import register
from blocks.transformer._attention_parts import channel_attention, check_heads


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4}, "shape": (2, 32, 8, 8)})
class GSA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, bias: bool = False):
        """num_heads must divide c."""
        super().__init__()
        check_heads("GSA", c, num_heads)
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=bias)
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, 1)
        out = channel_attention(q, k, v, self.num_heads, self.temperature, act="relu")
        # WFEN reorders (head, channel) to (channel, head) before the projection
        out = out.reshape(b, self.num_heads, c // self.num_heads, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.project_out(out)
