"""DilatedReparamConv: UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image Recognition. CVPR 2024. https://arxiv.org/abs/2311.15599

The Dilated Reparam Block: a depth-wise large-kernel conv+BN trained beside small dilated depth-wise
conv+BN branches; `fuse()` merges every branch into the one large kernel. Keeps channels."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.conv._reparam import fold_bn, merged_conv, pad_kernel
from blocks.registry import register

# (kernel sizes, dilation rates) of the parallel branches for each large kernel, as in the paper
BRANCHES = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


def _undilate(kernel: torch.Tensor, rate: int) -> torch.Tensor:
    """The dense kernel that a depth-wise kernel with dilation `rate` is equal to (zeros in the holes)."""
    size = rate * (kernel.shape[-1] - 1) + 1
    dense = kernel.new_zeros(*kernel.shape[:2], size, size)
    dense[..., ::rate, ::rate] = kernel
    return dense


@register("conv", channels="same", example={"args": [7], "shape": (2, 16, 16, 16)})
class DilatedReparamConv(nn.Module):
    def __init__(self, c: int, k: int = 13, branches=None):
        """branches: (kernel sizes, dilation rates) of the parallel branches, to override the paper's table
        (MHAF-YOLO's RepHMS uses its own); each branch must fit inside the k x k kernel."""
        super().__init__()
        if branches is None and k not in BRANCHES:
            raise ArgumentError(f"DilatedReparamConv supports kernel sizes {sorted(BRANCHES)}, got {k}")
        self.large = nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False)
        self.large_bn = nn.BatchNorm2d(c)
        sizes, rates = branches or BRANCHES[k]
        if any(rate * (size - 1) + 1 > k for size, rate in zip(sizes, rates)):
            raise ArgumentError(f"DilatedReparamConv: branches {branches} do not fit in a {k} x {k} kernel")
        self.rates = rates
        self.dilated = nn.ModuleList(nn.Conv2d(c, c, size, 1, rate * (size - 1) // 2, rate, groups=c, bias=False)
                                     for size, rate in zip(sizes, rates))
        self.dilated_bn = nn.ModuleList(nn.BatchNorm2d(c) for _ in sizes)
        self.reparam = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam is not None:
            return self.reparam(x)
        y = self.large_bn(self.large(x))
        for conv, bn in zip(self.dilated, self.dilated_bn):
            y = y + bn(conv(x))
        return y

    @torch.no_grad()
    def fuse(self):
        if self.reparam is not None:
            return
        size = self.large.kernel_size[0]
        kernel, bias = fold_bn(self.large.weight, self.large_bn)
        for conv, bn, rate in zip(self.dilated, self.dilated_bn, self.rates):
            k, b = fold_bn(conv.weight, bn)
            kernel, bias = kernel + pad_kernel(_undilate(k, rate), size), bias + b
        self.reparam = merged_conv(self.large, kernel, bias)
        del self.large, self.large_bn, self.dilated, self.dilated_bn
