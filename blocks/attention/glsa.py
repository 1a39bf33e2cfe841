"""GLSA: DuAT: Dual-Aggregation Transformer Network for Medical Image Segmentation. PRCV 2023. https://arxiv.org/abs/2212.11677

Global-to-local spatial aggregation: the input's channel halves go, after 1x1 projections to
`c2`, through a global branch (GCNet-style attention-pooled context gating the channels) and a local
branch (1x1 / residual depth-wise 3x3 convs ending in a sigmoid spatial mask); the two are
concatenated and mixed by a 1x1 Conv. Output: `c2` channels.

Compared with the authors' code (the plug-in's attention/GLSA.py, DuAT's GLSA): max abs diff 1e-7 on
(2, 32, 16, 16). Its unused channel/spatial attention and extra 1x1 Conv are left out."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


class _GlobalContext(nn.Module):
    """GCNet's context block (attention pooling, channel-multiply fusion) in DuAT's form x + x * gate."""

    def __init__(self, c: int, ratio: float = 2.0):
        super().__init__()
        planes = int(c * ratio)
        self.mask = nn.Conv2d(c, 1, 1)
        self.channel_mul = nn.Sequential(nn.Conv2d(c, planes, 1), nn.LayerNorm([planes, 1, 1]), nn.ReLU(),
                                         nn.Conv2d(planes, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.mask(x).flatten(2).softmax(-1)                          # (B, 1, HW)
        context = (x.flatten(2) @ weights.transpose(1, 2)).unsqueeze(-1)      # (B, C, 1, 1)
        return x + x * torch.sigmoid(self.channel_mul(context))


class _LocalBranch(nn.Module):
    """Three (1x1 Conv, residual depth-wise 3x3 Conv) pairs, a 1x1 conv + ReLU, then x + x * sigmoid(.)."""

    def __init__(self, c: int):
        super().__init__()
        acts = ("relu", "relu", "silu")  # the third pointwise conv uses SiLU in DuAT's code
        self.pointwise = nn.ModuleList(Conv(c, c, 1, act=act) for act in acts)
        self.depthwise = nn.ModuleList(Conv(c, c, 3, g=c, act="relu") for _ in acts)
        self.out = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for pointwise, depthwise in zip(self.pointwise, self.depthwise):
            y = pointwise(y)
            y = y + depthwise(y)
        return x + x * torch.sigmoid(self.out(y))


@register("attention", channels="arg0", example={"args": [16], "shape": (2, 32, 16, 16)})
class GLSA(nn.Module):
    def __init__(self, c1: int, c2: int = 32):
        """c1: input channels (even: the halves feed the two branches). c2: the branches' width and the
        output channels (DuAT's embed_dim)."""
        super().__init__()
        if c1 % 2:
            raise ChannelError(f"GLSA splits its input into two halves and needs even channels, got {c1}")
        self.local_proj = nn.Conv2d(c1 // 2, c2, 1)
        self.global_proj = nn.Conv2d(c1 // 2, c2, 1)
        self.local = _LocalBranch(c2)
        self.context = _GlobalContext(c2)
        self.fuse = Conv(2 * c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=1)
        return self.fuse(torch.cat((self.local(self.local_proj(first)), self.context(self.global_proj(second))), 1))
