"""SFA: FreqFormer: Frequency-aware Transformer for Lightweight Image Super-resolution (spatial frequency attention). IJCAI 2024. https://www.ijcai.org/proceedings/2024/81

Rectangle-window attention (CAT style: half the channels in h x w windows, the other half in w x h
windows, each with CrossFormer's dynamic position bias) beside a 1x1 + 3x3 depth-wise conv branch on
v and a high-frequency branch; C-Map, S-Map and the high-frequency map cross-gate the branches,
which are summed and linearly projected. Maps are zero-padded to whole windows (as FreqFormer does).
Token mixer on (B, C, H, W); keeps channels. FreqFormer's shifted-window variant (every fourth block
of its stages) is not offered: this is its unshifted form.
Compared with the authors' code (JPWang-CS/FreqFormer basicsr/archs/freqformer_arch.py,
Spatial_Frequency_Attention, b_idx 0): max abs diff 3e-12 on (2, 60, 8, 8) and (2, 60, 6, 6) in float64, random weights."""
import torch
from torch import nn

from blocks.registry import ChannelError, register
from blocks.transformer._attention_parts import (DynamicPosBias, check_heads, pad_to_multiple, window_merge,
                                                 window_partition)
from blocks.transformer._freqformer import ChannelProjection, FrequencyProjection, SpatialProjection, check_width


@register("transformer", channels="same", example={"args": [], "kwargs": {"num_heads": 4, "split_size": [2, 4]},
                                                   "shape": (2, 32, 8, 8)})
class SFA(nn.Module):
    def __init__(self, c: int, num_heads: int = 8, split_size=(8, 8), qkv_bias: bool = False):
        """c: a multiple of 4, at least 32 (each branch's position-bias MLP is c / 32 wide); num_heads: even,
        half of them per branch, dividing c / 2; split_size: the (h, w) window of the first branch (the
        second uses (w, h)); FreqFormer's released models use 6 heads and (8, 32) on 60 channels."""
        super().__init__()
        if c % 4 or num_heads % 2:
            raise ChannelError(f"SFA needs channels divisible by 4 and an even head count, got {c} and {num_heads}")
        check_heads("SFA", c // 2, num_heads // 2)
        check_width("SFA", c)
        self.num_heads, self.split_size = num_heads, tuple(split_size)
        self.scale = (c // num_heads) ** -0.5
        self.qkv = nn.Linear(c, 3 * c, bias=qkv_bias)
        self.hf = nn.Linear(c, c, bias=qkv_bias)
        self.proj = nn.Linear(c, c)
        self.dw_block = nn.Sequential(nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1, groups=c))
        self.pos = nn.ModuleList(DynamicPosBias(c // 8, num_heads // 2) for _ in range(2))
        self.channel_projection = ChannelProjection(c)
        self.spatial_projection = SpatialProjection(c)
        self.frequency_projection = FrequencyProjection(c)

    def _window_attention(self, q, k, v, wh: int, ww: int, pos: DynamicPosBias) -> torch.Tensor:
        """q, k, v: (B, C', H, W) with H, W multiples of the window; returns (B, C', H, W)."""
        h, w = q.shape[-2:]
        heads = self.num_heads // 2
        q, k, v = (window_partition(t, wh, ww) for t in (q, k, v))
        n, t, c = q.shape
        q, k, v = (x.reshape(n, t, heads, c // heads).transpose(1, 2) for x in (q, k, v))
        attn = ((q * self.scale) @ k.transpose(-2, -1) + pos(wh, ww)).softmax(-1)
        return window_merge((attn @ v).transpose(1, 2).reshape(n, t, c), wh, ww, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        hf = self.frequency_projection(self.hf(tokens).transpose(1, 2).reshape(b, c, h, w))
        qkv = self.qkv(tokens).transpose(1, 2).reshape(b, 3 * c, h, w)
        v = qkv[:, 2 * c:]
        side = max(self.split_size)
        q, k, v_padded = pad_to_multiple(qkv, side, side).chunk(3, 1)
        sh, sw = self.split_size
        half = c // 2
        attended = torch.cat((
            self._window_attention(q[:, :half], k[:, :half], v_padded[:, :half], sh, sw, self.pos[0]),
            self._window_attention(q[:, half:], k[:, half:], v_padded[:, half:], sw, sh, self.pos[1])), 1)
        attended = attended[:, :, :h, :w]
        conv = self.dw_block(v)
        channel_map = self.channel_projection(conv)
        conv = conv + channel_map
        hf = hf + channel_map + attended
        spatial_map = self.spatial_projection(attended)
        attended = (attended * torch.sigmoid(channel_map.mean((2, 3), keepdim=True))
                    * torch.sigmoid(hf.mean((2, 3), keepdim=True)))
        conv = torch.sigmoid(spatial_map) * conv * torch.sigmoid(hf)
        out = self.proj((attended + conv + hf).flatten(2).transpose(1, 2))
        return out.transpose(1, 2).reshape(b, c, h, w)
