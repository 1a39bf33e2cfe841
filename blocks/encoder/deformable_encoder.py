"""DeformableEncoder: Deformable DETR: Deformable Transformers for End-to-End Object Detection. ICLR 2021. https://arxiv.org/abs/2010.04159

The Deformable DETR encoder: 1x1 conv + GroupNorm projections of the backbone maps (extra levels by
stride-2 3x3 convs on the coarsest input), sine position + learned level embeddings, and
`num_layers` post-norm layers of multi-scale deformable self-attention and FFN over all levels'
pixels at once. Returns one hidden_dim map per level. Submodule names follow HF transformers'
DeformableDetrModel (input_proj, level_embed, layers.<i>.self_attn ... final_layer_norm).

Batches of images of different sizes, padded at the bottom and right, pass `pixel_mask` [B, H, W]
(True on real pixels), as HF's model takes it: positions count real pixels only, padded values are
not attended to, and reference points live in each image's real area (`valid_ratios`)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import init

from core.errors import ArgumentError
from blocks.common import activation
from blocks.decoder._deformable_attention import ProjectedDeformableAttention
from blocks.registry import register


def sine_position_embedding(height: int, width: int, dim: int, temperature: float = 10000.0,
                            device=None, dtype=torch.float32, mask: Tensor | None = None) -> Tensor:
    """[1, dim, H, W] DETR sine embedding with normalised coordinates (cell centres scaled to 2*pi):
    dim/2 channels for y then dim/2 for x, sin and cos interleaved. With `mask` [B, H, W] (True on
    real cells), [B, dim, H, W] with coordinates counted over each image's real cells only."""
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    if mask is None:
        y = torch.arange(1, height + 1, dtype=dtype, device=device)[None, :, None].expand(1, height, width)
        x = torch.arange(1, width + 1, dtype=dtype, device=device)[None, None, :].expand(1, height, width)
    else:
        y, x = mask.to(dtype).cumsum(1), mask.to(dtype).cumsum(2)
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    dim_t = temperature ** (2 * torch.div(torch.arange(half, device=device), 2, rounding_mode="floor").to(dtype) / half)

    def embed(coords):  # [B, H, W] -> [B, half, H, W]: sin on even channels, cos on odd ones
        angles = coords[..., None] / dim_t
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3).permute(0, 3, 1, 2)

    return torch.cat((embed(y), embed(x)), dim=1)


def level_masks(pixel_mask: Tensor, spatial_shapes) -> list[Tensor]:
    """The image-size mask [B, H, W] (True on real pixels) at each level's size (nearest, as HF)."""
    return [F.interpolate(pixel_mask[None].float(), size=shape).to(torch.bool)[0] for shape in spatial_shapes]


def valid_ratios(masks: list[Tensor], dtype) -> Tensor:
    """[B, levels, 2]: the real share of each level's width and height (1 without padding)."""
    return torch.stack([torch.stack((m[:, 0, :].sum(1) / m.shape[2], m[:, :, 0].sum(1) / m.shape[1]), -1).to(dtype)
                        for m in masks], 1)


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

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes,
                value_mask: Tensor | None = None) -> Tensor:
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, value_mask)
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

    def forward(self, feats: list[Tensor], pixel_mask: Tensor | None = None) -> list[Tensor]:
        """feats: the backbone maps, finest first; pixel_mask [B, H, W]: True on real pixels of a
        padded batch (None: every pixel is real)."""
        feats = [feats] if isinstance(feats, Tensor) else feats
        maps = self.project(feats)
        spatial_shapes = [tuple(m.shape[2:]) for m in maps]
        masks = [None] * len(maps) if pixel_mask is None else level_masks(pixel_mask, spatial_shapes)
        src = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        pos = torch.cat([
            (sine_position_embedding(h, w, self.hidden_dim, self.pe_temperature, src.device, src.dtype, mask)
             .flatten(2).transpose(1, 2) + self.level_embed[level].view(1, 1, -1))
            for level, ((h, w), mask) in enumerate(zip(spatial_shapes, masks))], 1)
        # every pixel's centre, in [0, 1] of the real area, as its reference on every level (HF's rule:
        # divided by the pixel's own level's real share, then scaled to each level's)
        ratios = None if pixel_mask is None else valid_ratios(masks, src.dtype)
        centres = []
        for level, (h, w) in enumerate(spatial_shapes):
            ys = (torch.arange(h, dtype=src.dtype, device=src.device) + 0.5) / h
            xs = (torch.arange(w, dtype=src.dtype, device=src.device) + 0.5) / w
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            centre = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1)[None]
            centres.append(centre if ratios is None else centre / ratios[:, None, level])
        reference_points = torch.cat(centres, 1)[:, :, None]
        if ratios is None:
            reference_points = reference_points.expand(src.shape[0], -1, len(spatial_shapes), -1)
        else:
            reference_points = reference_points * ratios[:, None]
        value_mask = None if pixel_mask is None else torch.cat([m.flatten(1) for m in masks], 1)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, value_mask)
        outputs = src.transpose(1, 2).split([h * w for h, w in spatial_shapes], dim=2)
        return [o.reshape(src.shape[0], self.hidden_dim, h, w) for o, (h, w) in zip(outputs, spatial_shapes)]
