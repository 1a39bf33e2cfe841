"""TopBasicLayer: Gold-YOLO: Efficient Object Detector via Gather-and-Distribute Mechanism. NeurIPS 2023. https://arxiv.org/abs/2309.11331

Gold-YOLO's high-stage information fusion (high-IFM): `block_num` transformer blocks on the pooled
map (multi-head attention with 1x1 Conv + BN projections, key_dim per head and attn_ratio * key_dim
values, ReLU6 before the output projection; a 1x1 Conv / depth-wise 3x3 / ReLU6 / 1x1 Conv MLP), then
a 1x1 conv to the global channels the injection rows split. Output: sum(ouc) channels.

Compared with the authors' code (the plug-in's neck_module/GoldYOLO.py): max abs diff 0 on
(2, 32, 4, 4)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register


class _Attention(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, int(attn_ratio * key_dim)
        self.to_q = Conv(dim, key_dim * num_heads, 1, act=None)
        self.to_k = Conv(dim, key_dim * num_heads, 1, act=None)
        self.to_v = Conv(dim, self.value_dim * num_heads, 1, act=None)
        self.proj = nn.Sequential(nn.ReLU6(), Conv(self.value_dim * num_heads, dim, 1, act=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.to_q(x).reshape(b, self.num_heads, self.key_dim, h * w).transpose(2, 3)
        k = self.to_k(x).reshape(b, self.num_heads, self.key_dim, h * w)
        v = self.to_v(x).reshape(b, self.num_heads, self.value_dim, h * w).transpose(2, 3)
        out = (q @ k).softmax(-1) @ v   # no 1/sqrt(key_dim) scaling, as in Gold-YOLO
        return self.proj(out.transpose(2, 3).reshape(b, -1, h, w))


class _Block(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, mlp_ratio: float, attn_ratio: float, drop_path: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.attn = _Attention(dim, key_dim, num_heads, attn_ratio)
        self.mlp = nn.Sequential(Conv(dim, hidden, 1, act=None), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden),
                                 nn.ReLU6(), Conv(hidden, dim, 1, act=None))
        if drop_path > 0:
            from torchvision.ops import StochasticDepth  # imported only when used (see blocks.common.deform_conv2d)

            self.drop_path = StochasticDepth(drop_path, "row")
        else:
            self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(x))
        return x + self.drop_path(self.mlp(x))


@register("neck", channels=lambda c_in, kw: sum(kw["ouc"]), example={"args": [[16, 8]], "shape": (2, 32, 4, 4)})
class TopBasicLayer(nn.Module):
    def __init__(self, c1: int, ouc: list, block_num: int = 2, key_dim: int = 8, num_heads: int = 4,
                 mlp_ratio: float = 4.0, attn_ratio: float = 2.0, drop_path: float = 0.0):
        """c1: input channels (PyramidPoolAgg's). ouc: the global channels for each injection point,
        e.g. [64, 128]. block_num: transformer blocks. key_dim, num_heads, attn_ratio: attention shape.
        mlp_ratio: MLP width over c1. drop_path: stochastic depth of every block."""
        super().__init__()
        self.blocks = nn.Sequential(*(_Block(c1, key_dim, num_heads, mlp_ratio, attn_ratio, drop_path)
                                      for _ in range(block_num)))
        self.conv = nn.Conv2d(c1, sum(ouc), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.blocks(x))
