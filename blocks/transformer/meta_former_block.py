"""MetaFormerBlock: MetaFormer Is Actually What You Need for Vision. CVPR 2022. https://arxiv.org/abs/2111.11418

x + ls1 * mixer(norm(x)), then x + ls2 * mlp(norm(x)) on channels-first maps (PoolFormer form:
GroupNorm(1) norms, 1x1-conv MLP, layer scale). `token_mixer` is any channel-keeping block given
as a nested `{module: Name, args: {...}}`; the default is PoolFormer's pooling mixer."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import activation, build_inner
from blocks.registry import register


class Pooling(nn.Module):
    """PoolFormer's token mixer: average pooling minus the input."""

    def __init__(self, c: int, pool_size: int = 3):
        super().__init__()
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, self.pool_size, 1, self.pool_size // 2, count_include_pad=False)
        return pooled - x


@register("transformer", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class MetaFormerBlock(nn.Module):
    def __init__(self, c: int, token_mixer=None, mlp_ratio: float = 4.0, act: str = "gelu",
                 layer_scale_init: float = 1e-5):
        super().__init__()
        hidden = int(c * mlp_ratio)
        self.norm1 = nn.GroupNorm(1, c)
        self.token_mixer = build_inner(token_mixer, c) if token_mixer is not None else Pooling(c)
        self.norm2 = nn.GroupNorm(1, c)
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), activation(act), nn.Conv2d(hidden, c, 1))
        self.layer_scale1 = nn.Parameter(layer_scale_init * torch.ones(c, 1, 1))
        self.layer_scale2 = nn.Parameter(layer_scale_init * torch.ones(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale1 * self.token_mixer(self.norm1(x))
        return x + self.layer_scale2 * self.mlp(self.norm2(x))
