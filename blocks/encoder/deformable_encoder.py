"""DeformableEncoder: Deformable DETR: Deformable Transformers for End-to-End Object Detection. ICLR 2021. https://arxiv.org/abs/2010.04159

The Deformable DETR encoder: 1x1 conv + GroupNorm projections of the backbone maps (extra levels by
stride-2 3x3 convs on the coarsest input), sine position + learned level embeddings, and
`num_layers` post-norm layers of multi-scale deformable self-attention and FFN over all levels'
pixels at once. Returns one hidden_dim map per level. Submodule names follow HF transformers'
DeformableDetrModel (input_proj, level_embed, layers.<i>.self_attn ... final_layer_norm)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.common import activation
from blocks.decoder._deformable_attention import ProjectedDeformableAttention
from blocks.registry import register


def sine_position_embedding(height: int, width: int, dim: int, temperature: float = 10000.0,
                            device=None, dtype=torch.float32) -> Tensor:
    """[1, dim, H, W] DETR sine embedding with normalised coordinates (cell centres scaled to 2*pi):
    dim/2 channels for y then dim/2 for x, sin and cos interleaved."""
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=dtype, device=device)
    x = torch.arange(1, width + 1, dtype=dtype, device=device)
    y = (y - 0.5) / (height + eps) * scale
    x = (x - 0.5) / (width + eps) * scale
    dim_t = temperature ** (2 * torch.div(torch.arange(half, device=device), 2, rounding_mode="floor").to(dtype) / half)

    def embed(coords):  # [N] -> [N, half]: sin on even channels, cos on odd ones
        angles = coords[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = embed(y)[:, None, :].expand(height, width, half)
    pos_x = embed(x)[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)[None]


class FFN(nn.Module):
    """fc1, activation, fc2 with dropout after the activation and after fc2 (HF names)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1, act="relu", activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation_fn = activation(act)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(self.activation_fn(self.fc1(x)))))


class EncoderLayer(nn.Module):
    """Post-norm: deformable self-attention around each pixel's own position on every level, then FFN."""

    def __init__(self, dim: int, nhead: int, dim_feedforward: int, dropout: float, act, num_levels: int,
                 num_points: int):
        super().__init__()
        self.self_attn = ProjectedDeformableAttention(dim, nhead, num_levels, num_points)
        self.dropout = nn.Dropout(dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.mlp = FFN(dim, dim_feedforward, dropout, act)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes) -> Tensor:
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes)
        src = self.self_attn_layer_norm(src + self.dropout(attended))
        return self.final_layer_norm(src + self.mlp(src))


def _outputs(c_in, kwargs):
    return [kwargs["hidden_dim"]] * kwargs["num_levels"]


@register("encoder", channels=_outputs, example={
    "shapes": [(2, 16, 16, 16), (2, 24, 8, 8)],
    "kwargs": {"hidden_dim": 32, "num_levels": 3, "nhead": 4, "num_layers": 2, "dim_feedforward": 64,
               "num_points": 2, "norm_groups": 8}})
class DeformableEncoder(nn.Module):
    def __init__(self, in_channels: list[int], hidden_dim: int = 256, num_levels: int = 4, nhead: int = 8,
                 num_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.1, act="relu",
                 num_points: int = 4, norm_groups: int = 32, pe_temperature: float = 10000.0):
        """in_channels: the backbone maps, finest first; num_levels >= their count (extra levels are
        made from the coarsest input); norm_groups: GroupNorm groups of the input projections."""
        super().__init__()
        in_channels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        if len(in_channels) > num_levels:
            raise ArgumentError(f"{len(in_channels)} input maps need num_levels >= {len(in_channels)}, got {num_levels}")
        self.hidden_dim, self.num_inputs, self.pe_temperature = hidden_dim, len(in_channels), pe_temperature

        def project(c_in, kernel, stride):
            return nn.Sequential(nn.Conv2d(c_in, hidden_dim, kernel, stride, kernel // 2),
                                 nn.GroupNorm(norm_groups, hidden_dim))

        extra = [project(in_channels[-1] if i == 0 else hidden_dim, 3, 2) for i in range(num_levels - len(in_channels))]
        self.input_proj = nn.ModuleList([project(c, 1, 1) for c in in_channels] + extra)
        self.level_embed = nn.Parameter(torch.empty(num_levels, hidden_dim))
        self.layers = nn.ModuleList(EncoderLayer(hidden_dim, nhead, dim_feedforward, dropout, act, num_levels, num_points)
                                    for _ in range(num_layers))
        for projection in self.input_proj:
            init.xavier_uniform_(projection[0].weight, gain=1)
            init.constant_(projection[0].bias, 0)
        init.normal_(self.level_embed)

    def project(self, feats: list[Tensor]) -> list[Tensor]:
        projected = [proj(f) for proj, f in zip(self.input_proj, feats)]
        for i, proj in enumerate(self.input_proj[len(feats):]):
            projected.append(proj(feats[-1] if i == 0 else projected[-1]))
        return projected

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        feats = [feats] if isinstance(feats, Tensor) else feats
        maps = self.project(feats)
        spatial_shapes = [tuple(m.shape[2:]) for m in maps]
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        pos = torch.cat([
            (sine_position_embedding(h, w, self.hidden_dim, self.pe_temperature, src.device, src.dtype)
             .flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
            for level, (h, w) in enumerate(spatial_shapes)], 1)
        # every pixel's centre, in [0, 1], as its reference on every level
        centres = []
        for h, w in spatial_shapes:
            ys = (torch.arange(h, dtype=src.dtype, device=src.device) + 0.5) / h
            xs = (torch.arange(w, dtype=src.dtype, device=src.device) + 0.5) / w
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            centres.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
        reference_points = torch.cat(centres, 0)[None, :, None].expand(src.shape[0], -1, len(spatial_shapes), -1)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes)
        outputs = src.transpose(1, 2).split([h * w for h, w in spatial_shapes], dim=2)
        return [o.reshape(src.shape[0], self.hidden_dim, h, w) for o, (h, w) in zip(outputs, spatial_shapes)]
