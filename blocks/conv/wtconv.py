"""WTConv: Wavelet Convolutions for Large Receptive Fields. ECCV 2024. https://arxiv.org/abs/2407.05848

Depth-wise small-kernel convs applied to the Haar sub-bands of 1..L cascaded wavelet levels, summed
back through the inverse transform, plus a scaled depth-wise conv of the input. Keeps channels."""
import torch
from torch import nn

from blocks.conv._haar import wavelet_band_path
from blocks.registry import register


@register("conv", channels="same", example={"args": [5, 1, 2], "shape": (2, 16, 16, 16)})
class WTConv(nn.Module):
    def __init__(self, c: int, k: int = 5, s: int = 1, wt_levels: int = 1, bias: bool = True):
        super().__init__()
        self.stride = s
        self.base = nn.Conv2d(c, c, k, padding="same", groups=c, bias=bias)
        self.base_scale = nn.Parameter(torch.ones(1, c, 1, 1))
        self.band_convs = nn.ModuleList(nn.Conv2d(4 * c, 4 * c, k, padding="same", groups=4 * c, bias=False)
                                        for _ in range(wt_levels))
        # the sub-band path starts small so the block begins close to its base conv (paper, Sec. 4)
        self.band_scales = nn.ParameterList(nn.Parameter(torch.full((1, 4 * c, 1, 1), 0.1))
                                            for _ in range(wt_levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_scale * self.base(x) + wavelet_band_path(x, self.band_convs, self.band_scales)
        return y[..., ::self.stride, ::self.stride] if self.stride > 1 else y
