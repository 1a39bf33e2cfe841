import torch
from torch import nn

from blocks.registry import ChannelError, register


@register("conv", channels="same", example={"args": [], "shape": (2, 32, 16, 16)})
class IDWC(nn.Module):
    """IDWC: InceptionNeXt: When Inception Meets ConvNeXt. CVPR 2024. https://arxiv.org/abs/2303.16900

    Inception depth-wise conv: splits the channels into an identity part and three equal parts that
    get a square k x k, a 1 x band and a band x 1 depth-wise conv; keeps channels.
    Compared with the authors' code (sail-sg/inceptionnext models/inceptionnext.py InceptionDWConv2d):
    max abs diff 0 on (2, 32, 16, 16).
    """

    def __init__(self, c: int, square_kernel_size: int = 3, band_kernel_size: int = 11, branch_ratio: float = 0.125):
        """c: channels (kept). square_kernel_size / band_kernel_size: the square and the strip kernels.
        branch_ratio: share of the channels each conv branch gets (the rest passes unchanged)."""
        super().__init__()
        branch = int(c * branch_ratio)
        if branch < 1 or 3 * branch > c:
            raise ChannelError(f"IDWC with branch_ratio {branch_ratio} gives {branch} channels per branch for {c} "
                               "input channels", hint="use at least 1 / branch_ratio channels and branch_ratio <= 1/3")
        self.dwconv_hw = nn.Conv2d(branch, branch, square_kernel_size, padding=square_kernel_size // 2, groups=branch)
        self.dwconv_w = nn.Conv2d(branch, branch, (1, band_kernel_size), padding=(0, band_kernel_size // 2), groups=branch)
        self.dwconv_h = nn.Conv2d(branch, branch, (band_kernel_size, 1), padding=(band_kernel_size // 2, 0), groups=branch)
        self.split = (c - 3 * branch, branch, branch, branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)
