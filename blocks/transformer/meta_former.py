"""MetaFormer: MetaFormer Baselines for Vision (the general MetaFormer block). TPAMI 2024. https://arxiv.org/abs/2210.13452

x = r1 * x + s1 * mixer(norm1(x)), then x = r2 * x + s2 * mlp(norm2(x)) on (B, C, H, W) maps: the
token mixer AND the channel MLP are both nested blocks (`{module: Name, args: {...}}`), so any
channel-keeping mixer of the zoo combines with any MLP of the zoo. s: layer scale, r: residual scale
(both optional). Defaults: PoolFormer's pooling mixer, a 1x1-conv GELU MLP of ratio 4, GroupNorm(1)
norms, layer scale 1e-5 (MetaFormerBlock's form). Keeps channels.
Not compared: a container; its default form is MetaFormerBlock's (PoolFormer), and a nested MetaFormer
equals the same mixer and MLP spelled out as rows (tests/test_zoo2_mixers.py)."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.common import activation, build_inner
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register

NORMS = {"group": lambda c: nn.GroupNorm(1, c), "layer": LayerNorm2d, "batch": nn.BatchNorm2d,
         "identity": lambda c: nn.Identity()}


class Pooling(nn.Module):
    """PoolFormer's token mixer: average pooling minus the input."""

    def __init__(self, c: int, pool_size: int = 3):
        super().__init__()
        self.pool_size = pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, self.pool_size, 1, self.pool_size // 2, count_include_pad=False)
        return pooled - x


def _scale(c: int, init: float | None) -> nn.Parameter | None:
    return None if init is None else nn.Parameter(init * torch.ones(c, 1, 1))


@register("transformer", channels="same", example={"args": [], "shape": (2, 16, 16, 16)})
class MetaFormer(nn.Module):
    def __init__(self, c: int, mixer=None, mlp=None, mlp_ratio: float = 4.0, act: str = "gelu", norm: str = "group",
                 layer_scale_init: float | None = 1e-5, res_scale_init: float | None = None, mlp_spatial: bool = False):
        """mixer, mlp: nested channel-keeping blocks, built with the channels; mlp_ratio, act: the default
        MLP's width and activation (unused with a nested mlp); norm: "group" (GroupNorm(1), PoolFormer),
        "layer" (LayerNorm over channels, ConvFormer/CAFormer), "batch" or "identity";
        layer_scale_init / res_scale_init: initial value of the per-channel branch / residual scale,
        None for none; mlp_spatial: give the mlp [norm2(x), block input] (SEFN's spatial input, as SEM-Net does)."""
        super().__init__()
        if norm not in NORMS:
            raise ArgumentError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
        self.mlp_spatial = mlp_spatial
        self.norm1 = NORMS[norm](c)
        self.token_mixer = build_inner(mixer, c) if mixer is not None else Pooling(c)
        self.norm2 = NORMS[norm](c)
        if mlp is not None:
            self.mlp = build_inner(mlp, c)
        else:
            hidden = int(c * mlp_ratio)
            self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), activation(act), nn.Conv2d(hidden, c, 1))
        self.layer_scale1, self.layer_scale2 = _scale(c, layer_scale_init), _scale(c, layer_scale_init)
        self.res_scale1, self.res_scale2 = _scale(c, res_scale_init), _scale(c, res_scale_init)

    @staticmethod
    def _add(x, branch, layer_scale, res_scale):
        if layer_scale is not None:
            branch = branch * layer_scale
        return (x if res_scale is None else x * res_scale) + branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block_input = x
        x = self._add(x, self.token_mixer(self.norm1(x)), self.layer_scale1, self.res_scale1)
        y = self.norm2(x)
        y = self.mlp([y, block_input] if self.mlp_spatial else y)
        return self._add(x, y, self.layer_scale2, self.res_scale2)
