"""WTConv: Wavelet Convolutions for Large Receptive Fields. ECCV 2024. https://arxiv.org/abs/2407.05848

Depth-wise small-kernel convs applied to the Haar sub-bands of 1..L cascaded wavelet levels, summed
back through the inverse transform, plus a scaled depth-wise conv of the input. Keeps channels."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.conv._haar import haar_forward, haar_inverse
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
        filtered, sizes = [], []
        low = x
        for conv, scale in zip(self.band_convs, self.band_scales):
            height, width = low.shape[-2:]
            sizes.append((height, width))
            low = F.pad(low, (0, width % 2, 0, height % 2))
            bands = haar_forward(low)                                   # (B, C, 4, h, w)
            low = bands[:, :, 0]
            b, c, _, h, w = bands.shape
            filtered.append((scale * conv(bands.reshape(b, 4 * c, h, w))).reshape(b, c, 4, h, w))
        recon = torch.zeros_like(filtered[-1][:, :, 0])
        for bands, (height, width) in zip(reversed(filtered), reversed(sizes)):
            bands = torch.cat(((bands[:, :, 0] + recon).unsqueeze(2), bands[:, :, 1:]), dim=2)
            recon = haar_inverse(bands)[..., :height, :width]
        y = self.base_scale * self.base(x) + recon
        return y[..., ::self.stride, ::self.stride] if self.stride > 1 else y
