"""FocusFeature: the focusing module of FDPN (focusing diffusion pyramid network), DEIM/YOLO improvement projects. 2024. https://github.com/suigong1/DFPD-YOLO

Brings three levels to the middle one's size (nearest x2 upsampling + 1x1 Conv for the small map,
1x1 Conv for the middle one, ADown for the large one), concatenates them, adds depth-wise convs of
kernels 5/7/9/11 to the concatenation, mixes with a 1x1 Conv and adds the concatenation back.
Inputs [small (P5), middle (P4), large (P3)]; output 3 * int(c_middle * e) channels."""
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ArgumentError
from blocks.conv.conv import Conv
from blocks.downsample.adown import ADown
from blocks.registry import register


def _channels(c_in, kwargs):
    return 3 * int(c_in[1] * kwargs["e"])


@register("neck", channels=_channels, example={"args": [], "shapes": [(2, 32, 8, 8), (2, 16, 16, 16), (2, 8, 32, 32)]})
class FocusFeature(nn.Module):
    def __init__(self, c_in: list, kernel_sizes=(5, 7, 9, 11), e: float = 0.5):
        super().__init__()
        if len(c_in) != 3:
            raise ArgumentError(f"FocusFeature takes three levels [small, middle, large], got {len(c_in)}")
        hidden = int(c_in[1] * e)
        self.small = Conv(c_in[0], hidden, 1)
        self.middle = Conv(c_in[1], hidden, 1) if e != 1 else nn.Identity()
        self.large = ADown(c_in[2], hidden)
        self.dw_convs = nn.ModuleList(nn.Conv2d(3 * hidden, 3 * hidden, k, padding=k // 2, groups=3 * hidden)
                                      for k in kernel_sizes)
        self.pw_conv = Conv(3 * hidden, 3 * hidden, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        small, middle, large = xs
        x = torch.cat((self.small(F.interpolate(small, scale_factor=2.0, mode="nearest")),
                       self.middle(middle), self.large(large)), 1)
        focused = x + sum(conv(x) for conv in self.dw_convs)
        return x + self.pw_conv(focused)
