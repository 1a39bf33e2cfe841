"""ELGCA: ELGC-Net: Efficient Local-Global Context Aggregation for Remote Sensing Change Detection. IEEE TGRS 2024. https://arxiv.org/abs/2403.17909

The ELGC-Net encoder block: LayerNorm, then the efficient local-global context aggregation (half the
channels through a depth-wise 3x3 conv for local context; the other half projected into `heads` maps
of c/4 channels: the first heads-3 summed and average-pooled into queries, one max-pooled into keys,
one as values, one kept as a local feature; a c/4 x c/4 channel attention computed on the pooled maps
re-weights the values), a residual, then LayerNorm and a 1x1 MLP with a depth-wise 3x3 positional conv,
and a residual. Keeps channels (a multiple of 4).
The key max-pool uses ceil_mode, so odd map sizes pool to the same grid as the queries (identical to
the authors' code on even sizes, which fail on odd ones).
Compared with the authors' code (techmn/elgcnet models/elgcnet.py EncoderBlock): max abs diff 1.4e-6 on
(2, 32, 16, 16)."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import ChannelError, register


class LocalGlobalAggregation(nn.Module):
    """ELGCA proper: depth-wise local half + pooled channel attention on the other half."""

    def __init__(self, c: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.dwconv = nn.Conv2d(c // 2, c // 2, 3, padding=1, groups=c // 2)
        self.qkvl = nn.Conv2d(c // 2, (c // 4) * heads, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, c, height, width = x.shape
        local, context = x.chunk(2, 1)
        local = self.act(self.dwconv(local))
        maps = self.act(self.qkvl(context)).reshape(batch, self.heads, c // 4, height, width)
        query = F.avg_pool2d(maps[:, :-3].sum(dim=1), 3, 2, 1)
        key = F.max_pool2d(maps[:, -3], 2, 2, ceil_mode=True)
        value, local_feature = maps[:, -2].flatten(2), maps[:, -1]
        attn = torch.softmax(torch.matmul(query.flatten(2), key.flatten(2).transpose(1, 2)), dim=1).transpose(1, 2)
        context = torch.matmul(attn, value).reshape(batch, c // 4, height, width)
        return torch.cat([local, local_feature, context], 1)


@register("transformer", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class ELGCA(nn.Module):
    def __init__(self, c: int, heads: int = 4, mlp_ratio: int = 4):
        """c: channels (a multiple of 4); heads: projected maps of c/4 channels (>= 4: query maps,
        key, value, local feature); mlp_ratio: MLP width / c."""
        super().__init__()
        if c % 4:
            raise ChannelError(f"ELGCA needs channels divisible by 4, got {c}")
        if heads < 4:
            raise ArgumentError(f"ELGCA needs heads >= 4 (queries, key, value, local feature), got {heads}")
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        hidden = c * mlp_ratio
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, c, 1)
        self.act = nn.GELU()
        self.attn = LocalGlobalAggregation(c, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        y = self.act(self.fc1(self.norm2(x)))
        return x + self.fc2(y + self.act(self.pos(y)))
