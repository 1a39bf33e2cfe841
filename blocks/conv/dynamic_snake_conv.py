import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.common import activation
from blocks.registry import ChannelError, register


def _conv_gn(c1: int, c2: int, act) -> nn.Sequential:
    """3x3 conv (with bias) + GroupNorm(c2 / 4 groups) + activation: DSCNet's plain layer."""
    return nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.GroupNorm(c2 // 4, c2), activation(act))


def _snake_offsets(offset: torch.Tensor) -> torch.Tensor:
    """Accumulate per-tap offsets outwards from the kernel centre (the centre stays at 0), so each
    tap moves relative to its neighbour and the kernel stays a continuous 'snake'. offset (B, k, H, W)."""
    centre = offset.shape[1] // 2
    right = torch.cumsum(offset[:, centre + 1:], dim=1)
    left = torch.cumsum(offset[:, :centre].flip(1), dim=1).flip(1)
    return torch.cat((left, torch.zeros_like(offset[:, :1]), right), dim=1)


class _SnakeConv(nn.Module):
    """Dynamic snake conv along one axis: morph 0 spreads the k taps along x and lets them wander
    in y, morph 1 the reverse; the sampled taps are stacked and reduced by a (k x 1) / (1 x k) conv."""

    def __init__(self, c1: int, c2: int, k: int, morph: int, extend_scope: float, act):
        super().__init__()
        self.k, self.morph, self.extend_scope = k, morph, extend_scope
        self.offset_conv = nn.Conv2d(c1, 2 * k, 3, padding=1)
        self.offset_norm = nn.GroupNorm(k, 2 * k)
        size = (k, 1) if morph == 0 else (1, k)
        self.conv = nn.Conv2d(c1, c2, size, stride=size)
        self.norm = nn.GroupNorm(c2 // 4, c2)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        k = self.k
        offset = torch.tanh(self.offset_norm(self.offset_conv(x)))
        y_offset, x_offset = offset[:, :k], offset[:, k:]
        taps = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
        rows = torch.arange(h, device=x.device, dtype=x.dtype).reshape(1, 1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).reshape(1, 1, 1, w)
        if self.morph == 0:     # taps along x; stacked under each row: (B, H*k, W)
            ys = rows + _snake_offsets(y_offset) * self.extend_scope
            xs = (cols + taps.reshape(1, k, 1, 1)).expand(b, k, h, w)
            ys, xs = (t.permute(0, 2, 1, 3).reshape(b, h * k, w) for t in (ys, xs))
        else:                   # taps along y; stacked beside each column: (B, H, W*k)
            ys = (rows + taps.reshape(1, k, 1, 1)).expand(b, k, h, w)
            xs = cols + _snake_offsets(x_offset) * self.extend_scope
            ys, xs = (t.permute(0, 2, 3, 1).reshape(b, h, w * k) for t in (ys, xs))
        # taps that leave the map are clamped to its border (authors' choice), then sampled bilinearly
        ys = ys.clamp(0, h - 1) * (2 / max(h - 1, 1)) - 1
        xs = xs.clamp(0, w - 1) * (2 / max(w - 1, 1)) - 1
        sampled = F.grid_sample(x, torch.stack((xs, ys), dim=-1), mode="bilinear", padding_mode="zeros",
                                align_corners=True)
        return self.act(self.norm(self.conv(sampled)))


@register("conv", channels="arg0", example={"args": [16, 5], "shape": (2, 8, 12, 12)})
class DynamicSnakeConv(nn.Module):
    """DynamicSnakeConv: Dynamic Snake Convolution based on Topological Geometric Constraints for Tubular Structure Segmentation. ICCV 2023. https://arxiv.org/abs/2307.08388

    DSCNet's layer: a plain 3x3 conv and two dynamic snake convs (k taps spread along x / along y,
    each tap offset from its neighbour along the other axis), each with GroupNorm + activation,
    concatenated and fused by a 3x3 conv + GroupNorm + activation. Output channels = c2.
    Compared with the authors' code (YaoleiQi/DSCNet DSCNet_2D_opensource/Code/DRIVE/S3_DSConv_pro.py
    DSConv_pro x 2 and S3_DSCNet_pro.py EncoderConv x 2, as in DSCNet_pro's first layer; k 5): max
    abs diff 0 on (2, 8, 12, 12) and (2, 8, 9, 14).
    """

    def __init__(self, c1: int, c2: int, k: int = 9, extend_scope: float = 1.0, act="relu"):
        """c1, c2: input and output channels (c2 a multiple of 4, for GroupNorm). k: taps of each snake
        kernel (odd; 9 in DSCNet). extend_scope: scale of the learnt offsets. act: activation after
        every GroupNorm (ReLU in DSCNet)."""
        super().__init__()
        if k % 2 == 0 or k < 3:
            raise ArgumentError(f"DynamicSnakeConv needs an odd kernel size >= 3, got {k}")
        if c2 % 4:
            raise ChannelError(f"DynamicSnakeConv needs output channels divisible by 4 (GroupNorm), got {c2}")
        self.conv = _conv_gn(c1, c2, act)
        self.snake_x = _SnakeConv(c1, c2, k, 0, extend_scope, act)
        self.snake_y = _SnakeConv(c1, c2, k, 1, extend_scope, act)
        self.out = _conv_gn(3 * c2, c2, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat((self.conv(x), self.snake_x(x), self.snake_y(x)), dim=1))
