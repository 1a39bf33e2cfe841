"""ARF: Adaptive receptive field module, from the DEIM plug-in guide (its paper not identified). IEEE TGRS 2025.

The guide lists ARF as IEEE TGRS 2025 but links arXiv 2402.19289, which is CAMixerSR (CVPR 2024, our
CAMixer), a different paper; the TGRS paper could not be identified, so the module follows the guide's
code (module/ARF.py).
Three depth-wise convs in series (3x3, 5x5, 7x7, each conv-BN-SiLU on the previous one's output)
give three growing receptive fields; their channel mean and max (2 maps) go through a 3x3 conv to
one spatial gate per branch; the gated sum of the branches multiplies the input, and a 1x1 conv
maps c1 to c2 (none when c1 == c2).
`sigmoid_gate`: the guide writes the gate's activation as `act=nn.Sigmoid` (the class, not an
instance), which Ultralytics' Conv turns into no activation, so its gate is linear; True (default)
applies the sigmoid the design means, False reproduces the guide's numbers.
Compared with the guide's code (module/ARF.py on Ultralytics' Conv): max abs diff 0 with
sigmoid_gate=False on (2, 16, 16, 16)."""
import torch
from torch import nn

from blocks.conv.conv import Conv
from blocks.registry import register

KERNELS = (3, 5, 7)


@register("backbone", channels="arg0", example={"args": [32], "shape": (2, 16, 16, 16)})
class ARF(nn.Module):
    def __init__(self, c1: int, c2: int, sigmoid_gate: bool = True):
        """c1, c2: input and output channels; sigmoid_gate: squash the branch gates (see above)."""
        super().__init__()
        self.branches = nn.ModuleList(Conv(c1, c1, k, g=c1) for k in KERNELS)
        self.spatial_gate = Conv(2, c1 * len(KERNELS), 3, act="sigmoid" if sigmoid_gate else None)
        self.project = Conv(c1, c2, 1) if c1 != c2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, y = [], x
        for branch in self.branches:
            y = branch(y)
            features.append(y)
        stacked = torch.cat(features, 1)
        pooled = torch.cat([stacked.mean(1, keepdim=True), stacked.amax(1, keepdim=True)], 1)
        gates = self.spatial_gate(pooled).chunk(len(KERNELS), 1)
        attention = sum(f * g for f, g in zip(features, gates))
        return self.project(x * attention)
