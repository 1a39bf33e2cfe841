"""DynamicFilter: FFT-based Dynamic Token Mixer for Vision. AAAI 2024. https://arxiv.org/abs/2303.03932

DFFormer's token mixer: a 1x1 expansion and StarReLU, a 2-D real FFT, a per-image global filter
mixed from `num_filters` learned frequency filters by weights an MLP predicts from the pooled input
(softmax over the filters, per channel), the inverse FFT and a 1x1 projection. Keeps channels; use it
as the token mixer of a MetaFormerBlock, or alone as a C2f inner block.
The learned filters have a fixed frequency grid (`size`); on another input size they are resized
bicubically, as the authors' detection backbones do (weight_resize=True).
FLOPs: the counter does not see torch.fft (rfft2/irfft2, about 5 N log2 N each per channel) nor the
complex filter product; it counts the 1x1 convs, the routing MLP, the filter mixing einsum and the resize.
Compared with the authors' code (okojoalg/dfformer models/dfformer.py DynamicFilter, channels-last):
max abs diff 0 on (2, 32, 14, 14) (native grid) and on (2, 32, 20, 12) with weight_resize=True."""
import torch
import torch.nn.functional as F
from torch import nn

from blocks.common import StarReLU
from blocks.registry import register


@register("transformer", channels="same", example={"kwargs": {"size": 16}, "shape": (2, 32, 16, 16)})
class DynamicFilter(nn.Module):
    def __init__(self, c: int, expansion_ratio: float = 2.0, reweight_expansion_ratio: float = 0.25,
                 num_filters: int = 4, size: int = 14):
        """c: channels; expansion_ratio: filtered width / c; reweight_expansion_ratio: routing MLP
        hidden width / c; num_filters: learned frequency filters mixed per image; size: the spatial size
        the filters are stored for (height; the rfft grid is size x (size // 2 + 1))."""
        super().__init__()
        self.num_filters = num_filters
        self.hidden = int(expansion_ratio * c)
        self.pwconv1 = nn.Conv2d(c, self.hidden, 1, bias=False)
        self.act = StarReLU()
        self.reweight = nn.Sequential(nn.Linear(c, int(reweight_expansion_ratio * c), bias=False), StarReLU(),
                                      nn.Linear(int(reweight_expansion_ratio * c), num_filters * self.hidden, bias=False))
        self.complex_weights = nn.Parameter(torch.randn(size, size // 2 + 1, num_filters, 2) * 0.02)
        self.pwconv2 = nn.Conv2d(self.hidden, c, 1, bias=False)

    def _filters(self, height: int, width: int) -> torch.Tensor:
        """The learned filters on the rfft grid of a (height, width) map, as (height, width, F) complex."""
        weights = self.complex_weights
        if weights.shape[:2] != (height, width):
            size_h, size_w, filters = weights.shape[:3]
            grid = weights.reshape(1, size_h, size_w, filters * 2).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
            weights = grid.permute(0, 2, 3, 1).reshape(height, width, filters, 2)
        return torch.view_as_complex(weights.float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        routing = self.reweight(x.mean(dim=(2, 3))).view(batch, self.num_filters, self.hidden).softmax(dim=1)
        y = self.act(self.pwconv1(x))
        spectrum = torch.fft.rfft2(y.float(), dim=(2, 3), norm="ortho")
        filters = self._filters(*spectrum.shape[2:])
        weight = torch.einsum("bfc,hwf->bchw", routing.to(filters.dtype), filters)
        y = torch.fft.irfft2(spectrum * weight, s=(height, width), dim=(2, 3), norm="ortho").to(x.dtype)
        return self.pwconv2(y)
