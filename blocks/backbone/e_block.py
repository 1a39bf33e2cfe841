"""EBlock: DarkIR: Robust Low-Light Image Restoration. CVPR 2025. https://arxiv.org/abs/2412.13443

DarkIR's encoder block: LayerNorm, an optional depth-wise 3x3 conv, a 1x1 expansion, depth-wise
dilated 3x3 convs (summed), SimpleGate and simplified channel attention, a 1x1 projection and a
residual scaled by beta; then a frequency MLP (the amplitude of the 2-D real FFT of the normalised
features goes through a 1x1-LeakyReLU-1x1 MLP, the phase is kept, inverse FFT) that multiplies the
features, added back scaled by gamma. beta and gamma start at zero (the block starts as identity).
Keeps channels (even, for SimpleGate).
FLOPs: the counter does not see torch.fft.rfft2/irfft2 nor the magnitude/phase arithmetic; it counts
the convs and the amplitude MLP.
Compared with the authors' code (cidautai/DarkIR archs/arch_model.py EBlock, extra_depth_wise=True as
in DarkIR): max abs diff 7e-7 on (2, 32, 16, 16)."""
import torch
from torch import nn

from blocks.backbone._darkir import DilatedGatedMixer
from blocks.norm._layer_norm2d import LayerNorm2d
from blocks.registry import register


class FrequencyMLP(nn.Module):
    """Process the FFT amplitude with a 1x1 MLP, keep the phase, transform back."""

    def __init__(self, c: int, expand: int = 2):
        super().__init__()
        self.process = nn.Sequential(nn.Conv2d(c, expand * c, 1), nn.LeakyReLU(0.1), nn.Conv2d(expand * c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft2(x.float(), norm="backward")
        magnitude = self.process(spectrum.abs())
        spectrum = torch.polar(magnitude, spectrum.angle())
        return torch.fft.irfft2(spectrum, s=x.shape[2:], norm="backward").to(x.dtype)


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class EBlock(nn.Module):
    def __init__(self, c: int, dw_expand: int = 2, dilations=(1,), extra_depth_wise: bool = True):
        """c: channels; dw_expand: width of the dilated convs / c; dilations: one depth-wise branch per
        rate (DarkIR's encoder uses (1,)); extra_depth_wise: the depth-wise 3x3 conv before the expansion."""
        super().__init__()
        width = dw_expand * c
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.extra_conv = nn.Conv2d(c, c, 3, padding=1, groups=c) if extra_depth_wise else nn.Identity()
        self.conv1 = nn.Conv2d(c, width, 1)
        self.mixer = DilatedGatedMixer(width, c, dilations)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        self.freq = FrequencyMLP(c)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.beta * self.mixer(self.conv1(self.extra_conv(self.norm1(x))))
        return y + y * self.freq(self.norm2(y)) * self.gamma
