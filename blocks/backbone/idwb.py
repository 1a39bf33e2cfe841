"""IDWB: InceptionNeXt: When Inception Meets ConvNeXt. CVPR 2024. https://arxiv.org/abs/2303.16900

The InceptionNeXt (MetaNeXt) block with inception depth-wise convolution: the channels split into an
identity part and three 1/8 branches (depth-wise 3x3, 1 x 11 and 11 x 1 band kernels), concatenated,
then BN, a 1x1 GELU MLP, a layer scale and a residual. `fuse()` folds the BN into the MLP's first 1x1
conv. Keeps channels (c >= 8, so each branch has a channel).
Compared with the authors' code (sail-sg/inceptionnext models/inceptionnext.py MetaNeXtBlock with
InceptionDWConv2d): max abs diff 0 on (2, 32, 16, 16), and 2e-7 after fuse()."""
import torch
from torch import nn

from blocks.registry import ChannelError, register


class InceptionDWConv2d(nn.Module):
    """Identity channels + depth-wise square, horizontal band and vertical band convs."""

    def __init__(self, c: int, square_kernel_size: int = 3, band_kernel_size: int = 11, branch_ratio: float = 0.125):
        super().__init__()
        branch = int(c * branch_ratio)
        if branch < 1:
            raise ChannelError(f"IDWB needs at least {int(1 / branch_ratio)} channels for branch_ratio {branch_ratio}, got {c}")
        self.dwconv_hw = nn.Conv2d(branch, branch, square_kernel_size, padding=square_kernel_size // 2, groups=branch)
        self.dwconv_w = nn.Conv2d(branch, branch, (1, band_kernel_size), padding=(0, band_kernel_size // 2), groups=branch)
        self.dwconv_h = nn.Conv2d(branch, branch, (band_kernel_size, 1), padding=(band_kernel_size // 2, 0), groups=branch)
        self.split = (c - 3 * branch, branch, branch, branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, square, wide, tall = x.split(self.split, 1)
        return torch.cat((identity, self.dwconv_hw(square), self.dwconv_w(wide), self.dwconv_h(tall)), 1)


@register("backbone", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class IDWB(nn.Module):
    def __init__(self, c: int, mlp_ratio: float = 4.0, band_kernel_size: int = 11, ls_init_value: float = 1e-6):
        """c: channels; mlp_ratio: MLP width / c (InceptionNeXt-T: 4, 4, 4, 3 by stage); band_kernel_size:
        length of the band kernels; ls_init_value: initial layer scale (0 = none)."""
        super().__init__()
        self.gamma = nn.Parameter(ls_init_value * torch.ones(c, 1, 1)) if ls_init_value else None
        self.token_mixer = InceptionDWConv2d(c, band_kernel_size=band_kernel_size)
        self.norm = nn.BatchNorm2d(c)
        hidden = int(mlp_ratio * c)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.fc1(self.norm(self.token_mixer(x)))))
        return x + (y if self.gamma is None else self.gamma * y)

    @torch.no_grad()
    def fuse(self):
        if isinstance(self.norm, nn.BatchNorm2d):  # fc1(s * t + b) = (fc1.W * s) t + (fc1.W b + fc1.b)
            scale = self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)
            shift = self.norm.bias - self.norm.running_mean * scale
            weight = self.fc1.weight.flatten(1)
            self.fc1.bias.add_(weight @ shift)
            self.fc1.weight.mul_(scale.view(1, -1, 1, 1))
            self.norm = nn.Identity()
