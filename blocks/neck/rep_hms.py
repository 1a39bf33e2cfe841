"""RepHMS: MHAF-YOLO: Multi-Branch Heterogeneous Auxiliary Fusion YOLO for Accurate Object Detection (re-parameterised heterogeneous multi-scale block). arXiv 2025. https://arxiv.org/abs/2502.04656

A 1x1 conv to `width` groups of c2 * e channels; group 0 is kept, each further group (plus the
previous group's output, cascading) passes `depth` bottlenecks of two large-kernel re-parameterised
depth-wise convs (UniRepLKNet's dilated reparam block + BN, SiLU) between 1x1 convs; all kept maps
are concatenated and fused by a 1x1 conv to c2. `fuse()` folds every dilated branch and BN.
c1 -> c2 channels. (The released cascade bookkeeping fails for depth >= 3 with width >= 4; here each
group's j-th bottleneck always receives the previous group's j-th output, which is what it computes
wherever it runs.)
Compared with the authors' code (yang-0201/MHAF-YOLO ultralytics/nn/modules/mafyolo.py, RepHMS):
max abs diff 0.0 on (2, 16, 16, 16) for (width, depth, kernel) (3, 2, 5), (2, 1, 3), (4, 2, 7),
(3, 3, 9), 3e-7 after fuse(); random weights and BN statistics."""
import torch
from torch import nn

from core.errors import ArgumentError
from blocks.common import fuse_conv_bn
from blocks.conv.conv import Conv
from blocks.conv.dilated_reparam_conv import DilatedReparamConv
from blocks.registry import register

# MHAF-YOLO's own branch table for the dilated reparam block (kernel: (branch kernels, dilations))
BRANCHES = {3: ((3, 1), (1, 1)), 5: ((3, 1), (1, 1)), 7: ((5, 3), (1, 1)), 9: ((7, 5, 3), (1, 1, 1)),
            11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)), 13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
            15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)), 17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7))}


class _LargeKernelDW(nn.Module):
    """UniRepLKNet block as MHAF-YOLO uses it: dilated reparam depth-wise conv, then BN, then SiLU."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.dwconv = DilatedReparamConv(c, k, BRANCHES[k])
        self.norm = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(self.norm(self.dwconv(x)))

    def fuse(self):
        if isinstance(self.norm, nn.BatchNorm2d) and self.dwconv.reparam is not None:
            self.dwconv.reparam = fuse_conv_bn(self.dwconv.reparam, self.norm)
            self.norm = nn.Identity()


class _DepthBottleneck(nn.Module):
    def __init__(self, c: int, k: int, expansion: float):
        super().__init__()
        mid = int(c * expansion)
        self.conv1 = Conv(c, mid, 1)
        self.conv2 = _LargeKernelDW(mid, k)
        self.one_conv = Conv(mid, mid, 1)
        self.conv3 = _LargeKernelDW(mid, k)
        self.one_conv2 = Conv(mid, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.one_conv2(self.conv3(self.one_conv(self.conv2(self.conv1(x)))))


@register("neck", channels="arg0", example={"args": [32, 3, 1, 2, 5], "shape": (2, 16, 16, 16)})
class RepHMS(nn.Module):
    def __init__(self, c1: int, c2: int, width: int = 3, depth: int = 1, depth_expansion: float = 2, kersize: int = 5,
                 expansion: float = 0.5):
        """width: channel groups (>= 2); depth: bottlenecks per group; depth_expansion: bottleneck width
        factor; kersize: the large depth-wise kernel (3, 5, 7, ..., 17); MHAF-YOLO-N uses e.g. [c2, 2, 1, 3, 5]."""
        super().__init__()
        if width < 2:
            raise ArgumentError(f"RepHMS needs width >= 2 (one kept group and at least one processed), got {width}")
        if kersize not in BRANCHES:
            raise ArgumentError(f"RepHMS supports kernel sizes {sorted(BRANCHES)}, got {kersize}")
        self.width, self.depth = width, depth
        self.c_ = int(c2 * expansion)
        self.conv1 = Conv(c1, self.c_ * width, 1)
        self.blocks = nn.ModuleList(nn.ModuleList(_DepthBottleneck(self.c_, kersize, depth_expansion)
                                                  for _ in range(depth)) for _ in range(width - 1))
        self.conv2 = Conv(self.c_ * (1 + (width - 1) * depth), c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = list(self.conv1(x).split(self.c_, 1))
        groups[1] = groups[1] + groups[0]
        kept, previous = [groups[0]], []
        for i, stage in enumerate(self.blocks):
            y, outputs = groups[i + 1], []
            for j, block in enumerate(stage):
                if previous:                      # cascade: the previous group's j-th output joins in
                    y = y + previous[j]
                y = block(y)
                outputs.append(y)
            kept += outputs
            previous = outputs
        return self.conv2(torch.cat(kept, 1))
