"""CSFCN: CSFCN: Context and Spatial Feature Calibration for Real-Time Semantic Segmentation. IEEE TIP 2023. https://ieeexplore.ieee.org/document/10268334

Two calibrations of a [low-resolution, high-resolution] pair. Context feature calibration (CFC):
every position of the low-resolution map attends to pyramid-pooled (6, 3, 2, 1 grids) keys and
values, refined by a tanh-gated local branch and added back. Spatial feature calibration (SFC): both
maps are projected to `c2`, the low one upsampled, and a conv predicts per-group sampling offsets
for each and two gates; the resampled maps are summed with the gates. Returns two maps:
[calibrated low-resolution map (its own channels), fused high-resolution map (`c2`)] (pick one with
an Index row).

Compared with the authors' code (the plug-in's featurefusion/CSFCN.py, the paper's CFC_CRB and
SFC_G2): max abs diff 0 on [(2, 32, 8, 8), (2, 16, 16, 16)] with random (non-zero) offsets."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register

_KEY_CHANNELS = 32   # query/key width of the context calibration (fixed in the paper's code)
_OFFSET_HIDDEN = 64  # hidden width of the offset predictor
_GROUPS = 2          # offset groups of the spatial calibration


def pyramid_pool(x: torch.Tensor, grids) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, S): adaptive average pools with g rows and about g * W / H columns each."""
    b, c, h, w = x.shape
    return torch.cat([F.adaptive_avg_pool2d(x, (g, max(1, round(w / h * g)))).reshape(b, c, -1) for g in grids], 2)


class _ContextCalibration(nn.Module):
    def __init__(self, c: int, grids=(6, 3, 2, 1)):
        super().__init__()
        self.grids = grids
        self.reduce = Conv(c, c, 3)
        self.query = nn.Conv2d(c, _KEY_CHANNELS, 1)
        self.key = nn.Conv1d(c, _KEY_CHANNELS, 1)
        self.value = nn.Conv1d(c, c, 1)
        for layer in (self.query, self.key, self.value):   # the paper's Keras-style init
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        # local refinement: x + x * tanh(conv(x)), its last conv zero-initialised (a no-op at start)
        self.local = nn.Sequential(Conv(c, max(c // 8, 1), 1), nn.Conv2d(max(c // 8, 1), c, 3, padding=1, bias=False))
        nn.init.zeros_(self.local[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        b, c, h, w = x.shape
        pooled = pyramid_pool(x, self.grids)
        similarity = (self.query(x).flatten(2).transpose(1, 2) @ self.key(pooled)).softmax(-1)   # (B, HW, S)
        context = (self.value(pooled) @ similarity.transpose(1, 2)).reshape(b, c, h, w)
        context = context + context * torch.tanh(self.local(context))
        return x + context


class _SpatialCalibration(nn.Module):
    def __init__(self, c_low: int, c_high: int, c2: int):
        super().__init__()
        self.low = Conv(c_low, c2, 3)
        self.high = Conv(c_high, c2, 3)
        self.offsets = nn.Sequential(Conv(2 * c2, _OFFSET_HIDDEN, 1),
                                     nn.Conv2d(_OFFSET_HIDDEN, 4 * _GROUPS + 2, 3, padding=1, bias=False))
        nn.init.zeros_(self.offsets[1].weight)   # start from the identity sampling with unit gates

    @staticmethod
    def _resample(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Sample each channel group of x at the base grid moved by `offset` pixels (x, y)."""
        n, c, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype),
                                torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype), indexing="ij")
        scale = torch.tensor([w, h], device=x.device, dtype=x.dtype)
        grid = torch.stack((xs, ys), -1) + offset.reshape(n * _GROUPS, 2, h, w).permute(0, 2, 3, 1) / scale
        sampled = F.grid_sample(x.reshape(n * _GROUPS, c // _GROUPS, h, w), grid, align_corners=True)
        return sampled.reshape(n, c, h, w)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = self.high(high)
        low = F.interpolate(self.low(low), high.shape[-2:], mode="bilinear", align_corners=True)
        out = self.offsets(torch.cat((high, low), 1))
        high = self._resample(high, out[:, :2 * _GROUPS])
        low = self._resample(low, out[:, 2 * _GROUPS:4 * _GROUPS])
        gates = 1 + torch.tanh(out[:, 4 * _GROUPS:])
        return low * gates[:, :1] + high * gates[:, 1:]


def _channels(c_in, kwargs):
    return [c_in[0], kwargs["c2"]]


@register("neck", channels=_channels, example={"args": [16], "shapes": [(2, 32, 8, 8), (2, 16, 16, 16)]})
class CSFCN(nn.Module):
    def __init__(self, c_in: list, c2: int):
        """c_in: [low-resolution (semantic), high-resolution (detail)] channels. c2: the fused map's
        channels (even: the offsets act on two channel groups)."""
        super().__init__()
        if len(c_in) != 2:
            raise ArgumentError(f"CSFCN fuses two inputs [low-resolution, high-resolution], got {len(c_in)}")
        if c2 % _GROUPS:
            raise ChannelError(f"CSFCN resamples two channel groups and needs even c2, got {c2}")
        self.context = _ContextCalibration(c_in[0])
        self.spatial = _SpatialCalibration(c_in[0], c_in[1], c2)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        low = self.context(xs[0])
        return [low, self.spatial(low, xs[1])]
