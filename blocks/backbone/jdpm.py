"""JDPM: Frequency-Spatial Entanglement Learning for Camouflaged Object Detection. ECCV 2024. https://arxiv.org/abs/2409.01686

FSEL's joint domain perception module: a 1x1 conv-BN-ReLU to c2, then four cascaded branches with
dilation 3, 5, 7, 9 (each a 1x1 conv-BN and a dilated 3x3 conv-BN-ReLU on the input plus the previous
branch's output); each branch adds a frequency feature (|IFFT(w * FFT(y))|, BN, ReLU, where the gate w
comes from a shared conv-BN-ReLU-conv-sigmoid on the real part of the spectrum); the four branches and
the input are concatenated, reduced by a 1x1 conv-BN-ReLU and added to the input. Output width c2
(channel rule "arg0"; c2 >= 16 for the gate's c2 / 16 bottleneck). As in the DEIM plug-in, the
authors' 1-channel prediction head (`out`) is left off, so the block returns the fused features.
FLOPs: the counter does not see torch.fft.fft2/ifft2 (about 5 N log2 N each per channel, 4 branches)
nor the complex gate product; it counts every conv, BN and ReLU.
Compared with the authors' code (CSYSI/FSEL FSEL_ECCV_2024/lib/FSEL_modules.py JDPM, up to its `out`
head, its forward restated without the head): max abs diff 0 on (2, 32, 16, 16)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import ChannelError, register


@register("backbone", channels="arg0", example={"args": [32], "shape": (2, 32, 16, 16)})
class JDPM(nn.Module):
    def __init__(self, c1: int, c2: int, dilations=(3, 5, 7, 9)):
        """c1, c2: input and output channels (c2 >= 16); dilations: the cascaded branches' rates."""
        super().__init__()
        if c2 < 16:
            raise ChannelError(f"JDPM needs at least 16 output channels (its frequency gate has c2 // 16), got {c2}")
        self.conv1 = Conv(c1, c2, 1, act="relu", bias=True)
        self.branches = nn.ModuleList(
            nn.Sequential(Conv(c2, c2, 1, act=None, bias=True), Conv(c2, c2, 3, d=d, act="relu", bias=True))
            for d in dilations)
        self.reduce = Conv(c2 * (len(dilations) + 1), c2, 1, act="relu", bias=True)
        self.gate = nn.Sequential(Conv(c2, c2 // 16, 1, act="relu", bias=True), nn.Conv2d(c2 // 16, c2, 1), nn.Sigmoid())
        self.freq_norm = nn.BatchNorm2d(c2)  # shared by the four frequency features
        self.act = nn.ReLU()

    def _frequency(self, y: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.fft2(y.float())
        filtered = torch.fft.ifft2(self.gate(spectrum.real) * spectrum).abs().to(y.dtype)
        return self.act(self.freq_norm(filtered))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        features, previous = [], None
        for branch in self.branches:
            spatial = branch(x if previous is None else x + previous)
            previous = spatial + self._frequency(spatial)
            features.append(previous)
        return self.reduce(torch.cat(features + [x], 1)) + x
