"""DySample: Learning to Upsample by Learning to Sample. ICCV 2023. https://arxiv.org/abs/2308.15085

Upsampling by point sampling: a 1x1 conv predicts, per channel group, s*s offsets for each input pixel
around the bilinear sub-pixel positions; grid_sample reads the input there. Keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register
from core.errors import ConfigError


@register("upsample", channels="same", example={"args": [], "shape": (2, 16, 8, 8)})
class DySample(nn.Module):
    def __init__(self, c: int, scale: int = 2, style: str = "lp", groups: int = 4, dyscope: bool = False):
        super().__init__()
        if style not in ("lp", "pl"):
            raise ConfigError(f"DySample style must be 'lp' or 'pl', got {style!r}")
        if c % groups or (style == "pl" and c % (scale * scale)):
            raise ConfigError(f"DySample: channels {c} must divide by groups {groups}"
                              + (f" and by scale^2 = {scale * scale}" if style == "pl" else ""))
        self.scale, self.style, self.groups = scale, style, groups
        # "lp": offsets from the low-res input; "pl": pixel-shuffle first, offsets at high res
        c_offset = c // (scale * scale) if style == "pl" else c
        c_out = 2 * groups if style == "pl" else 2 * groups * scale * scale
        self.offset = nn.Conv2d(c_offset, c_out, 1)
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        self.scope = None
        if dyscope:  # dynamic scope factor; 0-init so it starts at 0.5 * sigmoid(0) = 0.25, the static value
            self.scope = nn.Conv2d(c_offset, c_out, 1, bias=False)
            nn.init.zeros_(self.scope.weight)
        # offsets of the s*s sub-pixels from their source pixel's centre, in input pixels
        steps = (torch.arange(scale) - (scale - 1) / 2) / scale
        init = torch.stack(torch.meshgrid(steps, steps, indexing="xy"))   # (2: x, y; s, s)
        self.register_buffer("init_pos", init.reshape(2, 1, scale * scale).repeat(1, groups, 1).reshape(1, -1, 1, 1))

    def _offsets(self, x: torch.Tensor) -> torch.Tensor:
        source = F.pixel_shuffle(x, self.scale) if self.style == "pl" else x
        offset = self.offset(source)
        offset = offset * (0.5 * torch.sigmoid(self.scope(source)) if self.scope is not None else 0.25)
        if self.style == "pl":
            offset = F.pixel_unshuffle(offset, self.scale)
        return offset + self.init_pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        offset = self._offsets(x).reshape(b, 2, g * s * s, h, w)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype, device=x.device) + 0.5,
                                torch.arange(w, dtype=x.dtype, device=x.device) + 0.5, indexing="ij")
        coords = torch.stack((xs, ys)).reshape(1, 2, 1, h, w) + offset             # pixel units, (x, y)
        size = torch.tensor([w, h], dtype=x.dtype, device=x.device).reshape(1, 2, 1, 1, 1)
        grid = 2 * coords / size - 1
        # each (group, sub-pixel) channel lands at its place in the s-times larger map
        grid = F.pixel_shuffle(grid.reshape(b, -1, h, w), s).reshape(b, 2, g, s * h, s * w)
        grid = grid.permute(0, 2, 3, 4, 1).reshape(b * g, s * h, s * w, 2)
        out = F.grid_sample(x.reshape(b * g, c // g, h, w), grid, mode="bilinear", align_corners=False,
                            padding_mode="border")
        return out.reshape(b, c, s * h, s * w)
