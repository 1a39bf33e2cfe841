import math

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


def _gabor(size: int, order: float, angle: float, scale: float) -> torch.Tensor:
    """A real fractional Gabor filter on [-1, 1]^2. The angle is used as a number of radians, as in
    the authors' code (which passes 0, 45, 90, 135)."""
    axis = torch.linspace(-1, 1, size, dtype=torch.float64)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    x_theta = x * math.cos(angle) + y * math.sin(angle)
    y_theta = -x * math.sin(angle) + y * math.cos(angle)
    envelope = torch.exp(-((x_theta ** 2 + (y_theta / scale) ** 2) ** order))
    return (envelope * torch.cos(2 * math.pi * x_theta / scale)).float()


def _frft(c_in: int, c_out: int, size: int, f: float, p: float) -> torch.Tensor:
    """The fixed fractional-Fourier kernel of the authors, laid out exactly as their (k, k, in, out)
    array reshaped to (out, in, k, k)."""
    grid = torch.arange(1, size + 1, dtype=torch.float64)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    def chirp(t):
        return torch.cos(-f * t / math.sin(p) + (f * f + t * t) / (2 * math.tan(p)))

    kernel = (chirp(y) * chirp(x)).T
    return kernel[:, :, None, None].expand(size, size, c_in, c_out).reshape(c_out, c_in, size, size).float()


class _Perceive(nn.Module):
    """3x3 conv with a kernel modulated by fixed or learnable filters, ReLU, dropout, 2x2 max (stride 1)."""

    def __init__(self, c_in: int, c_out: int, filters: list[torch.Tensor], learnable: bool):
        super().__init__()
        self.t = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        if learnable:
            self.filters = nn.ParameterList(nn.Parameter(f.expand(c_out, 1, 3, 3).clone()) for f in filters)
        else:
            self.register_buffer("filter", filters[0])
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = sum(f * self.t for f in self.filters) if hasattr(self, "filters") else self.filter * self.t
        y = self.drop(F.relu(F.conv2d(x, kernel, padding=1)))
        return F.max_pool2d(F.pad(y, (1, 0, 1, 0)), 2, stride=1)


class _FrequencyUnit(nn.Module):
    """The frequency perception unit: four channel groups through Gabor (one shared unit) or FrFT
    (four units) filters, a 1x1 conv, and a residual when the widths agree."""

    def __init__(self, c_in: int, c_out: int, order: float, kind: str):
        super().__init__()
        if kind == "FrGT":
            filters = [_gabor(3, order, angle, scale) for angle in (0, 45, 90, 135) for scale in (1, 2, 3, 4)]
            self.units = nn.ModuleList([_Perceive(c_in // 4, c_out // 4, filters, learnable=True)])
            self.fc = nn.Conv2d(c_out, c_out, 1)
        else:
            self.units = nn.ModuleList(_Perceive(c_in // 4, c_out // 4, [_frft(c_in // 4, c_out // 4, 3, f, order)],
                                                 learnable=False) for f in (0.25, 0.5, 0.75, 1.0))
            self.fc = Conv(c_out, c_out, 1)
        self.residual = c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.chunk(x, 4, dim=1)
        units = self.units if len(self.units) == 4 else [self.units[0]] * 4
        y = self.fc(torch.cat([unit(g) for unit, g in zip(units, groups)], dim=1))
        return y + x if self.residual else y


class _SpatialUnit(nn.Module):
    """The spatial perception unit: 3x3 then 5x5 depth-wise convs on the two halves (the second sees
    the first's output), a 1x1 conv, and a residual when the widths agree."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        half = c_in // 2
        self.c1 = Conv(half, half, 3, g=half)
        self.c2 = Conv(half, half, 5, g=half)
        self.c3 = Conv(c_in, c_out, 1)
        self.residual = c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.c1(x1)
        y = self.c3(torch.cat((x1, self.c2(x2 + x1)), dim=1))
        return y + x if self.residual else y


@register("conv", channels="arg0", example={"args": [16], "shape": (2, 16, 16, 16)})
class SFSConv(nn.Module):
    """SFSConv: Unleashing Channel Potential: Space-Frequency Selection Convolution for SAR Object Detection. CVPR 2024. https://openaccess.thecvf.com/content/CVPR2024/html/Li_Unleashing_Channel_Potential_Space-Frequency_Selection_Convolution_for_SAR_Object_Detection_CVPR_2024_paper.html

    Space-frequency selection conv: 1x1 convs shunt the input into a spatial unit (cascaded
    depth-wise 3x3 / 5x5) and a frequency unit (fractional Gabor or fractional Fourier modulated 3x3
    convs); a parameter-free channel softmax selects between them and a 1x1 conv projects the sum.
    Output channels = c2.
    Compared with the authors' code (like413/SFS-Conv model/SFS-Conv.py SFS_Conv, both filters):
    max abs diff 0 with either filter on (2, 16, 16, 16) in eval mode, with their always-on
    F.dropout switched off; here dropout runs only in training (their functional dropout also runs
    at inference, which makes their outputs random).
    """

    def __init__(self, c1: int, c2: int, order: float = 0.25, filter: str = "FrGT"):
        """c1, c2: input and output channels (c1 a multiple of 8, c2 of 4). order: fractional order
        of the filters. filter: "FrGT" (fractional Gabor, the paper's choice) or "FrFT"."""
        super().__init__()
        if c1 % 8 or c2 % 4:
            raise ChannelError(f"SFSConv needs input channels divisible by 8 and output channels by 4, got {c1} -> {c2}",
                               hint="use multiples of 8 channels")
        if filter not in ("FrGT", "FrFT"):
            raise ArgumentError(f"SFSConv filter must be 'FrGT' or 'FrFT', got {filter!r}")
        self.pwc0 = Conv(c1, c1 // 2, 1)
        self.pwc1 = Conv(c1, c1 // 2, 1)
        self.spu = _SpatialUnit(c1 // 2, c2)
        self.fpu = _FrequencyUnit(c1 // 2, c2, order, filter)
        self.pwc_out = Conv(c2, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.spu(self.pwc0(x)), self.fpu(self.pwc1(x))), dim=1)
        y = F.softmax(F.adaptive_avg_pool2d(y, 1), dim=1) * y
        spatial, frequency = torch.chunk(y, 2, dim=1)
        return self.pwc_out(spatial + frequency)
